"""The broker: topics over a log, publishing with validation, groups, reads, lag, maintenance."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from gossamer.events.errors import (
    EventsError,
    InvalidEventError,
    InvalidRequestError,
    TooLargeError,
    UnknownTopicError,
)
from gossamer.events.groups import ConsumerGroup, GroupCoordinator, GroupSettings
from gossamer.events.log import Appended, EventLog, Maintenance, PartitionState
from gossamer.events.model import Event, EventLimits, NewEvent, new_event_from_json, now_ms
from gossamer.events.model import partition_for as place
from gossamer.events.payload_schema import PayloadSchema
from gossamer.events.periodic import Periodic
from gossamer.events.topics import TopicConfig

log = logging.getLogger(__name__)

DEAD_LETTER_HEADER = "gossamer-dead-letter-"


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Bounds and periods of one broker."""

    limits: EventLimits = field(default_factory=EventLimits)
    max_batch_events: int = 1000
    max_request_bytes: int = 16 * 1024 * 1024
    max_read_events: int = 1000
    maintenance_interval_s: float = 30.0
    groups: GroupSettings = field(default_factory=GroupSettings)


@dataclass(frozen=True, slots=True)
class Topic:
    """A declared topic and its compiled payload schema."""

    config: TopicConfig
    schema: PayloadSchema | None

    @classmethod
    def of(cls, config: TopicConfig) -> Topic:
        """Compile a configuration's schema once."""
        return cls(config, PayloadSchema(config.schema) if config.schema is not None else None)


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """How far a group is behind on one partition."""

    partition: int
    committed: int | None
    end: int
    lag: int


@dataclass(frozen=True, slots=True)
class GroupLag:
    """A group's position on a topic."""

    topic: str
    group: str
    members: int
    partitions: list[PartitionLag]

    @property
    def total(self) -> int:
        """Events the group has yet to commit, over all partitions."""
        return sum(p.lag for p in self.partitions)


class Broker:
    """Owns the log, the topics and the consumer groups of one broker process."""

    def __init__(self, event_log: EventLog, settings: BrokerSettings) -> None:
        self.log = event_log
        self.settings = settings
        self.groups = GroupCoordinator(event_log, settings.groups, self._dead_letter)
        self._topics: dict[str, Topic] = {}
        self._maintenance = Periodic(
            "retention and compaction", settings.maintenance_interval_s, self._maintain_quietly
        )
        self.last_maintenance: list[Maintenance] = []

    def __repr__(self) -> str:
        return f"<Broker {self.log!r}: {len(self._topics)} topics, {self.groups!r}>"

    async def start(self, declared: Sequence[TopicConfig] = ()) -> None:
        """Open the log, declare the given topics, start background work."""
        await self.log.open()
        for config in await self.log.topics():
            self._topics[config.name] = Topic.of(config)
        # Topics without a dead-letter topic first: a dead-letter topic that is declared too
        # gets its own spec, not the default one.
        for config in sorted(declared, key=lambda c: c.dead_letter_topic is not None):
            await self.declare(config)
        self.groups.start()
        self._maintenance.start()

    async def stop(self) -> None:
        """End streams, stop background work, close the log."""
        await self.groups.stop()
        await self._maintenance.stop()
        await self.log.close()

    async def declare(self, config: TopicConfig) -> TopicConfig:
        """Create or reconfigure a topic, and its dead-letter topic if that does not exist."""
        target = config.dead_letter_topic
        if target is not None and target not in self._topics:
            dead = TopicConfig(target, description=f"dead letters of {config.name}")
            await self.log.declare(dead)
            self._topics[target] = Topic.of(dead)
        await self.log.declare(config)
        self._topics[config.name] = Topic.of(config)
        self.groups.retopic(config)
        return config

    def topic(self, name: str) -> Topic:
        """A declared topic, or UnknownTopicError (404)."""
        try:
            return self._topics[name]
        except KeyError:
            raise UnknownTopicError(name) from None

    def topic_names(self) -> list[str]:
        """Every topic, sorted."""
        return sorted(self._topics)

    async def publish(self, name: str, items: Sequence[object]) -> list[Appended]:
        """Validate events (shape, key, schema), place them by key, append them durably."""
        topic = self.topic(name)
        if not items:
            raise InvalidRequestError("no events to publish")
        if len(items) > self.settings.max_batch_events:
            raise TooLargeError(
                f"{len(items)} events in one batch; at most {self.settings.max_batch_events}"
            )
        now = now_ms()
        events: list[NewEvent] = []
        for index, item in enumerate(items):
            try:
                event = new_event_from_json(item, self.settings.limits, now)
            except InvalidEventError as error:
                where = f"events[{index}]" + (f".{error.field}" if error.field else "")
                field = where if len(items) > 1 else error.field
                raise InvalidEventError(field, error.message) from None
            if topic.config.compaction and event.key is None:
                raise InvalidEventError("key", f"required: topic {name} is compacted by key")
            events.append(event)
        if topic.schema is not None:
            topic.schema.check([event.payload for event in events])
        partitions = topic.config.partitions
        return await self.log.append(
            name, [(place(event.key, event.id, partitions), event) for event in events]
        )

    async def read(self, name: str, partition: int, offset: int, limit: int) -> list[Event]:
        """Events of one partition from an offset, without a group."""
        topic = self.topic(name)
        if not 0 <= partition < topic.config.partitions:
            raise InvalidRequestError(
                f"topic {name} has partitions 0 to {topic.config.partitions - 1}, not {partition}"
            )
        return await self.log.read(
            name, partition, offset, min(limit, self.settings.max_read_events)
        )

    async def positions(self, name: str, where: str) -> dict[int, int]:
        """Offsets per partition for `beginning`, `end`, or a time in milliseconds since epoch."""
        self.topic(name)
        states = await self.log.partitions(name)
        if where == "beginning":
            return {s.partition: s.start for s in states}
        if where == "end":
            return {s.partition: s.end for s in states}
        try:
            time_ms = int(where)
        except ValueError:
            raise InvalidRequestError(f"not beginning, end or a time: {where!r}") from None
        return {
            s.partition: await self.log.offset_for_time(name, s.partition, time_ms) for s in states
        }

    async def partitions(self, name: str) -> list[PartitionState]:
        """Bounds of each partition of a topic."""
        self.topic(name)
        return await self.log.partitions(name)

    def group(self, topic: str, name: str) -> ConsumerGroup:
        """A consumer group of a declared topic."""
        return self.groups.group(self.topic(topic).config, name)

    async def lag(self, topic: str | None = None, group: str | None = None) -> list[GroupLag]:
        """Every group's committed position and lag, optionally for one topic or group."""
        pairs = set(await self.log.groups())
        for name in self.topic_names():
            pairs.update((name, g.name) for g in self.groups.active(name))
        result: list[GroupLag] = []
        for topic_name, group_name in sorted(pairs):
            if (topic is not None and topic_name != topic) or (group not in (None, group_name)):
                continue
            if topic_name not in self._topics:
                continue
            committed = await self.log.committed(group_name, topic_name)
            active = [g for g in self.groups.active(topic_name) if g.name == group_name]
            members = len(active[0].members) if active else 0
            parts = [
                PartitionLag(
                    s.partition,
                    committed.get(s.partition),
                    s.end,
                    s.end - max(committed.get(s.partition, s.start), s.start),
                )
                for s in await self.log.partitions(topic_name)
            ]
            result.append(GroupLag(topic_name, group_name, members, parts))
        return result

    async def maintain(self) -> list[Maintenance]:
        """One retention and compaction pass over every topic that has either."""
        done: list[Maintenance] = []
        now = now_ms()
        for name in self.topic_names():
            config = self._topics[name].config
            retention = config.retention_ms is not None or config.retention_bytes is not None
            if not (retention or config.compaction):
                continue
            done.append(await self.log.maintain(name, now))
        self.last_maintenance = done
        return done

    async def _maintain_quietly(self) -> None:
        try:
            for result in await self.maintain():
                if result.expired or result.compacted:
                    log.info(
                        "topic %s: %d expired, %d compacted",
                        result.topic,
                        result.expired,
                        result.compacted,
                    )
        except EventsError as error:
            log.warning("maintenance failed: %s", error.reason)

    async def _dead_letter(self, group: str, event: Event, deliveries: int, reason: str) -> None:
        source = self.topic(event.topic).config
        target_name = source.dead_letter_topic
        assert target_name is not None, "only topics with a dead-letter topic cap deliveries"
        target = self.topic(target_name)
        headers = event.headers
        headers.update(
            {
                f"{DEAD_LETTER_HEADER}reason": reason[:1000],
                f"{DEAD_LETTER_HEADER}group": group,
                f"{DEAD_LETTER_HEADER}topic": event.topic,
                f"{DEAD_LETTER_HEADER}partition": str(event.partition),
                f"{DEAD_LETTER_HEADER}offset": str(event.offset),
                f"{DEAD_LETTER_HEADER}id": event.id,
                f"{DEAD_LETTER_HEADER}deliveries": str(deliveries),
            }
        )
        # Derived from the event and the group, so a dead letter sent twice is stored once.
        seed = f"gossamer:dead-letter:{group}/{event.topic}/{event.partition}/{event.offset}"
        letter_id = str(uuid.uuid5(uuid.NAMESPACE_URL, seed))
        # The payload is not decoded: a dead letter is stored as it came, never checked again.
        letter = NewEvent.create(
            letter_id,
            event.key,
            kind=event.type,
            time_ms=event.time_ms,
            headers=headers,
            payload=None,
            payload_json=event.payload_json,
        )
        partition = place(event.key, letter_id, target.config.partitions)
        await self.log.append(target_name, [(partition, letter)])
        log.info(
            "%s/%d@%d -> %s after %d deliveries: %s",
            event.topic,
            event.partition,
            event.offset,
            target_name,
            deliveries,
            reason,
        )
