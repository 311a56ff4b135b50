"""The NATS JetStream log: a stream per topic partition, offsets and topics in key-value buckets.

A partition is the JetStream stream `{prefix}_{topic}_{partition}`, so an event's offset is its
stream sequence minus one and offsets grow per partition exactly as in the embedded log. Its
subject carries the key (`{prefix}.{topic}.{p}.k.{base64url(key)}`), which lets compaction ask
for the newest event of a key. Publishing uses `Nats-Msg-Id` = event id, so a retried publish
within the duplicate window is acknowledged as a duplicate instead of stored twice.

Durability: an event is acknowledged after its PubAck, so it survives a kill -9 of the broker
(this process); surviving a crash of nats-server or a power cut is nats-server's own policy (2.9
writes its store asynchronously and syncs it periodically, unlike the embedded log with
synchronous=FULL). Retention by size is JetStream's own (max_bytes per stream); retention by time
and compaction run here, over event times, as in the embedded log. Consumer groups are
coordinated by the broker, so all members of a group must connect to the same broker.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.kv import KeyValue

from gossamer.events.errors import InvalidRequestError, OverloadedError, UnknownTopicError
from gossamer.events.log import Appended, AppendSignal, Maintenance, PartitionState
from gossamer.events.model import Event, NewEvent
from gossamer.events.topics import TopicConfig

_META = "Gossamer-Meta"
_HEADERS = "Gossamer-Headers"
_NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError)


@dataclass(frozen=True, slots=True)
class JetStreamLogConfig:
    """Where JetStream is and how the log uses it."""

    url: str = "nats://127.0.0.1:4222"
    prefix: str = "gossamer"
    duplicate_window_s: float = 600.0
    replicas: int = 1
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 10.0
    max_readers: int = 256
    reader_idle_s: float = 60.0
    read_wait_s: float = 2.0


@dataclass(slots=True)
class _Reader:
    """An ephemeral pull consumer positioned at `next_seq` of one stream."""

    stream: str
    subscription: JetStreamContext.PullSubscription
    next_seq: int


class JetStreamLog:
    """An EventLog on NATS JetStream, for brokers that outgrow one machine."""

    def __init__(self, config: JetStreamLogConfig) -> None:
        self.config = config
        self._signal = AppendSignal()
        self._topics: dict[str, TopicConfig] = {}
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._offsets: KeyValue | None = None
        self._catalog: KeyValue | None = None
        self._readers: OrderedDict[tuple[str, int], _Reader] = OrderedDict()

    def __repr__(self) -> str:
        return f"<JetStreamLog {self.config.url} {self.config.prefix}: {len(self._topics)} topics>"

    async def open(self) -> None:
        """Connect, create the buckets if needed, learn the topics."""
        config = self.config
        try:
            self._nc = await nats.connect(
                config.url,
                connect_timeout=config.connect_timeout_s,
                max_reconnect_attempts=-1,
                allow_reconnect=True,
            )
            self._js = self._nc.jetstream(timeout=config.request_timeout_s)
            self._offsets = await self._bucket("offsets")
            self._catalog = await self._bucket("topics")
            for name in await self._keys("topics"):
                entry = await self._catalog.get(name)
                spec = json.loads(entry.value or b"{}")
                self._topics[name] = TopicConfig.from_spec(name, spec)
        except _NATS_ERRORS as error:
            raise OverloadedError(f"JetStream at {config.url}: {error}") from error

    async def close(self) -> None:
        """Delete this broker's consumers and close the connection."""
        for key in list(self._readers):
            await self._drop_reader(key)
        if self._nc is not None:
            # Every publish has been acknowledged and every reader dropped: nothing to drain.
            with contextlib.suppress(*_NATS_ERRORS):
                await asyncio.wait_for(self._nc.close(), self.config.request_timeout_s)
            self._nc = None

    def appended(self) -> AppendSignal:
        """Wakes readers when this broker appends (others' appends are seen on the next poll)."""
        return self._signal

    async def declare(self, config: TopicConfig) -> None:
        """Create or update one stream per partition and record the topic."""
        existing = self._topics.get(config.name)
        if existing is not None and config.partitions < existing.partitions:
            raise InvalidRequestError(
                f"topic {config.name} has {existing.partitions} partitions; "
                "partitions can be added but not removed"
            )
        js, catalog = self._jet(), self._catalog
        assert catalog is not None
        try:
            for partition in range(config.partitions):
                stream = self._stream_config(config, partition)
                if existing is not None and partition < existing.partitions:
                    await js.update_stream(stream)
                else:
                    await js.add_stream(stream)
            await catalog.put(config.name, json.dumps(config.to_spec()).encode())
        except _NATS_ERRORS as error:
            raise OverloadedError(f"JetStream: {error}") from error
        self._topics[config.name] = config

    async def topics(self) -> list[TopicConfig]:
        """Every topic, in name order."""
        return [self._topics[name] for name in sorted(self._topics)]

    async def append(self, topic: str, events: Sequence[tuple[int, NewEvent]]) -> list[Appended]:
        """Publish every event, then wait for every PubAck (order kept per partition)."""
        self._topic(topic)
        js = self._jet()
        try:
            pending = [
                await js.publish_async(
                    self._subject(topic, partition, event.key),
                    event.payload_json.encode(),
                    stream=self.stream_name(topic, partition),
                    headers=_headers(event),
                )
                for partition, event in events
            ]
            acks = await asyncio.wait_for(asyncio.gather(*pending), self.config.request_timeout_s)
        except _NATS_ERRORS as error:
            raise OverloadedError(f"JetStream did not store the events: {error}") from error
        self._signal.bump(topic)
        return [
            Appended(event.id, partition, ack.seq - 1, bool(ack.duplicate))
            for (partition, event), ack in zip(events, acks, strict=True)
        ]

    async def read(self, topic: str, partition: int, offset: int, limit: int) -> list[Event]:
        """Up to `limit` events from `offset`, through a consumer kept for the next read."""
        self._topic(topic)
        state = await self._state(topic, partition)
        seq = max(offset + 1, state.start + 1)
        if seq > state.end or limit <= 0:
            return []
        key = (topic, partition)
        reader = self._readers.get(key)
        if reader is None or reader.next_seq != seq:
            await self._drop_reader(key)
            reader = await self._open_reader(topic, partition, seq)
        try:
            messages = await reader.subscription.fetch(
                min(limit, state.end - seq + 1), timeout=self.config.read_wait_s
            )
        except nats.errors.TimeoutError:
            messages = []
        except _NATS_ERRORS as error:
            await self._drop_reader(key)
            raise OverloadedError(f"JetStream read failed: {error}") from error
        events = [_event(topic, partition, m) for m in messages]
        if events:
            reader.next_seq = events[-1].offset + 2
            self._readers[key] = reader
            self._readers.move_to_end(key)
        else:
            await self._drop_reader(key)
        while len(self._readers) > self.config.max_readers:
            await self._drop_reader(next(iter(self._readers)))
        return events

    async def partitions(self, topic: str) -> list[PartitionState]:
        """Bounds of each partition, from its stream's state."""
        config = self._topic(topic)
        return [(await self._state(topic, p)).public() for p in range(config.partitions)]

    async def offset_for_time(self, topic: str, partition: int, time_ms: int) -> int:
        """First offset whose event time is at or after `time_ms` (a scan over event times)."""
        state = await self._state(topic, partition)
        offset = state.start
        while offset < state.end:
            events = await self.read(topic, partition, offset, 1000)
            if not events:
                break
            for event in events:
                if event.time_ms >= time_ms:
                    return event.offset
            offset = events[-1].offset + 1
        return state.end

    async def commit(self, group: str, topic: str, offsets: Mapping[int, int]) -> None:
        """Record a group's next offsets in the offsets bucket."""
        self._topic(topic)
        bucket = self._offsets
        assert bucket is not None
        try:
            for partition, offset in offsets.items():
                await bucket.put(_offset_key(topic, group, partition), str(offset).encode())
        except _NATS_ERRORS as error:
            raise OverloadedError(f"JetStream did not store the commit: {error}") from error

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        """A group's committed offsets."""
        config = self._topic(topic)
        bucket = self._offsets
        assert bucket is not None
        found: dict[int, int] = {}
        for partition in range(config.partitions):
            try:
                entry = await bucket.get(_offset_key(topic, group, partition))
            except nats.js.errors.KeyNotFoundError:
                continue
            found[partition] = int(entry.value or b"0")
        return found

    async def groups(self) -> list[tuple[str, str]]:
        """(topic, group) pairs with commits."""
        assert self._offsets is not None
        pairs = set()
        for key in await self._keys("offsets"):
            topic, group, _ = key.split(".")
            pairs.add((topic, base64.urlsafe_b64decode(group + "=" * (-len(group) % 4)).decode()))
        return sorted(pairs)

    async def maintain(self, topic: str, now_ms: int) -> Maintenance:
        """Retention by event time (purge of a prefix) and compaction (deletes by sequence)."""
        config = self._topic(topic)
        expired = compacted = 0
        for partition in range(config.partitions):
            if config.retention_ms is not None:
                expired += await self._expire(topic, partition, now_ms - config.retention_ms)
            if config.compaction:
                cutoff = now_ms - config.compaction_lag_ms
                compacted += await self._compact(topic, partition, cutoff)
        return Maintenance(topic, expired, compacted)

    def stream_name(self, topic: str, partition: int) -> str:
        """The JetStream stream holding one partition."""
        return f"{self.config.prefix}_{topic}_{partition}"

    async def _expire(self, topic: str, partition: int, cutoff_ms: int) -> int:
        state = await self._state(topic, partition)
        first_kept = state.start
        while first_kept < state.end:
            events = await self.read(topic, partition, first_kept, 1000)
            young = [e for e in events if e.time_ms >= cutoff_ms]
            if young or not events:
                first_kept = young[0].offset if young else state.end
                break
            first_kept = events[-1].offset + 1
        if first_kept <= state.start:
            return 0
        try:
            await self._jet().purge_stream(self.stream_name(topic, partition), seq=first_kept + 1)
        except _NATS_ERRORS as error:
            raise OverloadedError(f"JetStream purge failed: {error}") from error
        after = await self._state(topic, partition)
        return max(0, state.messages - after.messages)

    async def _compact(self, topic: str, partition: int, cutoff_ms: int) -> int:
        js = self._jet()
        stream = self.stream_name(topic, partition)
        state = await self._state(topic, partition)
        newest: dict[str, int] = {}
        removed = 0
        offset = state.start
        while offset < state.end:
            events = await self.read(topic, partition, offset, 1000)
            if not events:
                break
            for event in events:
                if event.key is None or event.time_ms >= cutoff_ms:
                    continue
                subject = self._subject(topic, partition, event.key)
                if subject not in newest:
                    newest[subject] = (await js.get_last_msg(stream, subject)).seq or 0
                if newest[subject] > event.offset + 1:
                    with contextlib.suppress(nats.js.errors.NotFoundError):
                        await js.delete_msg(stream, event.offset + 1)
                        removed += 1
            offset = events[-1].offset + 1
        return removed

    async def _state(self, topic: str, partition: int) -> _StreamState:
        try:
            info = await self._jet().stream_info(self.stream_name(topic, partition))
        except _NATS_ERRORS as error:
            raise OverloadedError(f"JetStream: {error}") from error
        first, last = info.state.first_seq, info.state.last_seq
        return _StreamState(
            partition, max(first - 1, 0), last, info.state.bytes, info.state.messages
        )

    async def _open_reader(self, topic: str, partition: int, seq: int) -> _Reader:
        stream = self.stream_name(topic, partition)
        consumer = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=seq,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=self.config.reader_idle_s,
            mem_storage=True,
        )
        try:
            subscription = await self._jet().pull_subscribe(
                f"{self.config.prefix}.{topic}.{partition}.>", stream=stream, config=consumer
            )
        except _NATS_ERRORS as error:
            raise OverloadedError(f"JetStream: {error}") from error
        return _Reader(stream, subscription, seq)

    async def _drop_reader(self, key: tuple[str, int]) -> None:
        reader = self._readers.pop(key, None)
        if reader is None:
            return
        with contextlib.suppress(*_NATS_ERRORS):
            async with asyncio.timeout(self.config.request_timeout_s):
                info = await reader.subscription.consumer_info()
                await reader.subscription.unsubscribe()
                await self._jet().delete_consumer(reader.stream, info.name)

    async def _bucket(self, name: str) -> KeyValue:
        js = self._jet()
        bucket = f"{self.config.prefix}_{name}"
        try:
            return await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            return await js.create_key_value(
                bucket=bucket,
                history=1,
                storage=StorageType.FILE,
                replicas=self.config.replicas,
            )

    async def _keys(self, name: str) -> list[str]:
        """Keys of a bucket, from its stream's subjects: one request, and unlike the client's
        key watcher it cannot stop early."""
        bucket = f"{self.config.prefix}_{name}"
        info = await self._jet().stream_info(f"KV_{bucket}", subjects_filter=">")
        prefix = f"$KV.{bucket}."
        return sorted(s[len(prefix) :] for s in (info.state.subjects or {}) if s.startswith(prefix))

    def _stream_config(self, config: TopicConfig, partition: int) -> StreamConfig:
        budget = config.partition_retention_bytes
        return StreamConfig(
            name=self.stream_name(config.name, partition),
            subjects=[f"{self.config.prefix}.{config.name}.{partition}.>"],
            storage=StorageType.FILE,
            num_replicas=self.config.replicas,
            duplicate_window=self.config.duplicate_window_s,
            max_bytes=budget if budget is not None else -1,
            description=config.description,
        )

    def _subject(self, topic: str, partition: int, key: str | None) -> str:
        base = f"{self.config.prefix}.{topic}.{partition}"
        if key is None:
            return f"{base}.n"
        return f"{base}.k.{_token(key)}"

    def _topic(self, name: str) -> TopicConfig:
        try:
            return self._topics[name]
        except KeyError:
            raise UnknownTopicError(name) from None

    def _jet(self) -> JetStreamContext:
        assert self._js is not None, "log is not open"
        return self._js


@dataclass(frozen=True, slots=True)
class _StreamState:
    """A partition's bounds, and how many events its stream holds (deletes leave gaps)."""

    partition: int
    start: int
    end: int
    bytes: int
    messages: int

    def public(self) -> PartitionState:
        """The bounds as the log interface reports them."""
        return PartitionState(self.partition, self.start, self.end, self.bytes)


def _token(key: str) -> str:
    """A key as one subject token: base64url without padding (no dots, no wildcards)."""
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _offset_key(topic: str, group: str, partition: int) -> str:
    return f"{topic}.{_token(group)}.{partition}"


def _headers(event: NewEvent) -> dict[str, str]:
    meta = {"id": event.id, "key": event.key, "type": event.type, "time": event.time_ms}
    return {
        "Nats-Msg-Id": event.id,
        _META: json.dumps(meta, separators=(",", ":")),
        _HEADERS: json.dumps(dict(event.headers), separators=(",", ":")),
    }


def _event(topic: str, partition: int, message: Msg) -> Event:
    headers: dict[str, Any] = message.headers or {}
    meta = json.loads(headers[_META])
    return Event(
        topic,
        partition,
        message.metadata.sequence.stream - 1,
        meta["id"],
        meta.get("key"),
        meta.get("type"),
        meta["time"],
        headers.get(_HEADERS, "{}"),
        message.data.decode(),
    )
