"""The Python client of the event broker: async over httpx, and a small synchronous wrapper.

```python
async with EventsClient() as events:
    await events.publish("users", {"userId": "u1"}, key="u1", type="UserAdded")
    async with events.subscribe("users", group="mailer") as deliveries:
        async for event in deliveries:
            with event.trace():
                await send_welcome_mail(event.payload)
            await deliveries.ack(event)
```
Every publish carries a W3C `traceparent`: a child of the trace being handled, else a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import Future as ThreadFuture
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import httpx

from gossamer.events import tracecontext
from gossamer.events.model import format_time, parse_time

log = logging.getLogger(__name__)

DEFAULT_SERVER = "http://127.0.0.1:15070"
_NO_DELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
SERVER_ENV = "GOSSAMER_EVENTS"
T = TypeVar("T")


def resolve_server(explicit: str | None = None) -> str:
    """The broker to use: the given URL, then $GOSSAMER_EVENTS, then the local default."""
    return (explicit or os.environ.get(SERVER_ENV) or DEFAULT_SERVER).rstrip("/")


class BrokerError(Exception):
    """The broker refused a request; `status` and `reason` say why."""

    def __init__(self, status: int, reason: str, body: Any = None) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason
        self.body = body


class SchemaError(BrokerError):
    """A payload broke its topic's schema (422); `violations` name each field."""

    @property
    def violations(self) -> list[dict[str, Any]]:
        """`{"index", "path", "message"}` for each violation."""
        found: list[dict[str, Any]] = (self.body or {}).get("violations", [])
        return found


class SubscriptionEnded(Exception):  # noqa: N818 - it is an end, not an error
    """The broker ended this member's session (timeout, replaced, shutdown)."""


@dataclass(frozen=True, slots=True)
class ClientTimeouts:
    """Seconds to connect, to wait for a reply (or the next line of a stream), to send, for a
    pooled connection. A stream's read timeout must exceed the broker's keepalive period."""

    connect: float = 5.0
    read: float = 30.0
    write: float = 30.0
    pool: float = 10.0

    def httpx(self) -> httpx.Timeout:
        """The same, as httpx takes them."""
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


@dataclass(frozen=True, slots=True)
class Draft:
    """An event to publish."""

    payload: Any
    key: str | None = None
    type: str | None = None
    headers: Mapping[str, str] | None = None
    id: str | None = None
    time: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """The event as the publish endpoint takes it, with trace context added."""
        body: dict[str, Any] = {
            "payload": self.payload,
            "headers": tracecontext.outgoing(self.headers),
        }
        for name in ("key", "type", "id"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        if self.time is not None:
            body["time"] = format_time(int(self.time.timestamp() * 1000))
        return body


@dataclass(frozen=True, slots=True)
class Published:
    """Where a published event was stored; `duplicate` when its id was stored before."""

    id: str
    partition: int
    offset: int
    duplicate: bool

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Published:
        """From the broker's reply."""
        return cls(data["id"], data["partition"], data["offset"], data["duplicate"])


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """An event as a consumer receives it."""

    topic: str
    partition: int
    offset: int
    id: str
    key: str | None
    type: str | None
    time_ms: int
    headers: dict[str, str]
    payload: Any
    deliveries: int = 1

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> ReceivedEvent:
        """From one line of a stream."""
        return cls(
            data["topic"],
            data["partition"],
            data["offset"],
            data["id"],
            data.get("key"),
            data.get("type"),
            parse_time(data["time"]),
            data.get("headers") or {},
            data.get("payload"),
            data.get("deliveries", 1),
        )

    @property
    def trace_context(self) -> tracecontext.TraceContext | None:
        """The publisher's trace context, if it sent one."""
        return tracecontext.TraceContext.parse(self.headers)

    @contextlib.contextmanager
    def trace(self) -> Iterator[None]:
        """Handle the event inside its publisher's trace: what you publish continues it."""
        with tracecontext.use(self.trace_context):
            yield


class EventsClient:
    """An async client of one broker; use as `async with EventsClient(url) as events`."""

    def __init__(
        self,
        server: str | None = None,
        *,
        timeouts: ClientTimeouts | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.server = resolve_server(server)
        self.timeouts = timeouts or ClientTimeouts()
        # Keep every connection: closing and reopening them costs more than the requests.
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        self._http = http or httpx.AsyncClient(
            base_url=self.server,
            timeout=self.timeouts.httpx(),
            # httpx writes a request's head and body separately: without TCP_NODELAY the body
            # waits for the broker's delayed ACK of the head, 40 ms on Linux, on every publish.
            transport=httpx.AsyncHTTPTransport(limits=limits, socket_options=_NO_DELAY),
        )

    def __repr__(self) -> str:
        return f"<EventsClient {self.server}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._http.aclose()

    async def publish(
        self,
        topic: str,
        payload: Any,
        *,
        key: str | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
        id: str | None = None,
        time: datetime | None = None,
    ) -> Published:
        """Publish one event; returns once the broker has stored it durably."""
        draft = Draft(payload, key, type, headers, id, time)
        reply = await self._request("POST", f"/topics/{topic}/publish", json=draft.to_json())
        return Published.of(reply)

    async def publish_batch(self, topic: str, drafts: Sequence[Draft]) -> list[Published]:
        """Publish several events in one request, stored together or not at all."""
        body = {"events": [d.to_json() for d in drafts]}
        reply = await self._request("POST", f"/topics/{topic}/publish", json=body)
        return [Published.of(item) for item in reply["results"]]

    async def topics(self) -> list[dict[str, Any]]:
        """Every topic with its partition count and size."""
        reply = await self._request("GET", "/topics")
        topics: list[dict[str, Any]] = reply["topics"]
        return topics

    async def describe(self, topic: str) -> dict[str, Any]:
        """A topic's spec, partitions and groups."""
        reply: dict[str, Any] = await self._request("GET", f"/topics/{topic}")
        return reply

    async def declare(self, topic: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Create or reconfigure a topic from a Topic spec (camelCase, as in a manifest)."""
        reply: dict[str, Any] = await self._request("PUT", f"/topics/{topic}", json=dict(spec))
        return reply

    async def read(
        self,
        topic: str,
        *,
        partition: int | None = None,
        offset: int | None = None,
        start: str | datetime = "beginning",
        limit: int = 100,
    ) -> list[ReceivedEvent]:
        """Events from an offset (with a partition), or from `beginning`, `end` or a time."""
        params = self._position(partition, offset, start)
        params["limit"] = str(limit)
        async with contextlib.aclosing(self._stream_events(topic, params)) as events:
            return [event async for event in events]

    def tail(
        self, topic: str, *, start: str | datetime = "end", partition: int | None = None
    ) -> AsyncGenerator[ReceivedEvent, None]:
        """Follow a topic without a group: every event from `start` on, as it is published.

        Use with `contextlib.aclosing` when leaving the loop early, so the stream is closed.
        """
        params = self._position(partition, None, start)
        params["follow"] = "true"
        return self._stream_events(topic, params)

    def subscribe(
        self,
        topic: str,
        group: str,
        *,
        member: str | None = None,
        from_beginning: bool = False,
        heartbeat_s: float | None = None,
        max_pending_acks: int = 10_000,
    ) -> Subscription:
        """Join a consumer group; iterate the returned subscription inside `async with`.

        Heartbeats go every `heartbeat_s` seconds, by default a third of the session timeout
        the broker announces.
        """
        return Subscription(
            self._http,
            topic,
            group,
            member or f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:8]}",
            from_beginning=from_beginning,
            heartbeat_s=heartbeat_s,
            max_pending_acks=max_pending_acks,
        )

    async def seek(
        self,
        topic: str,
        group: str,
        *,
        to: str | datetime | None = None,
        offsets: Mapping[int, int] | None = None,
    ) -> dict[int, int]:
        """Move a group to `beginning`, `end`, a time, or explicit offsets per partition."""
        body: dict[str, Any]
        if offsets is not None:
            body = {"offsets": {str(p): o for p, o in offsets.items()}}
        else:
            body = {"to": _where(to or "beginning")}
        reply = await self._request("POST", f"/topics/{topic}/groups/{group}/seek", json=body)
        return {int(p): o for p, o in reply["committed"].items()}

    async def group(self, topic: str, group: str) -> dict[str, Any]:
        """A group's members, assignment, committed offsets and lag."""
        reply: dict[str, Any] = await self._request("GET", f"/topics/{topic}/groups/{group}")
        return reply

    async def lag(self, topic: str | None = None, group: str | None = None) -> list[dict[str, Any]]:
        """Every group's lag, per partition."""
        params = {k: v for k, v in (("topic", topic), ("group", group)) if v is not None}
        reply = await self._request("GET", "/lag", params=params)
        groups: list[dict[str, Any]] = reply["groups"]
        return groups

    async def query(
        self, sql: str, *, topic: str | None = None, output: Literal["json", "csv"] = "json"
    ) -> Any:
        """SQL over topic history; JSON `{"columns", "rows", ...}` or CSV text."""
        path = f"/topics/{topic}/query" if topic else "/query"
        body = {"sql": sql, "format": output}
        response = await self._http.post(path, json=body)
        _raise_for(response)
        return response.text if output == "csv" else response.json()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._http.request(method, path, **kwargs)
        _raise_for(response)
        return response.json()

    async def _stream_events(
        self, topic: str, params: dict[str, str]
    ) -> AsyncGenerator[ReceivedEvent, None]:
        async with self._http.stream("GET", f"/topics/{topic}/events", params=params) as response:
            if response.status_code >= 400:
                await response.aread()
                _raise_for(response)
            async for line in response.aiter_lines():
                if not line:
                    continue
                data = json.loads(line)
                if data.get("kind") == "event":
                    yield ReceivedEvent.of(data)

    @staticmethod
    def _position(
        partition: int | None, offset: int | None, start: str | datetime
    ) -> dict[str, str]:
        params: dict[str, str] = {}
        if partition is not None:
            params["partition"] = str(partition)
        if offset is not None:
            params["offset"] = str(offset)
        else:
            params["from"] = _where(start)
        return params


def _where(start: str | datetime) -> str:
    if isinstance(start, datetime):
        return format_time(int(start.timestamp() * 1000))
    return start


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        reason = body.get("error", response.reason_phrase)
    except ValueError:
        body, reason = None, response.text[:200] or response.reason_phrase
    cls = SchemaError if response.status_code == 422 else BrokerError
    raise cls(response.status_code, reason, body)


@dataclass(slots=True)
class _PendingAck:
    partition: int
    offset: int
    error: str | None
    done: asyncio.Future[None] = field(repr=False)


class Subscription:
    """Membership of a consumer group: an async iterator of events, with acks and heartbeats.

    Acks are sent in batches: while one ack request is in flight, the next ones gather, so a
    fast consumer makes few requests. `ack` returns once the broker has committed.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        topic: str,
        group: str,
        member: str,
        *,
        from_beginning: bool,
        heartbeat_s: float | None,
        max_pending_acks: int,
    ) -> None:
        self.topic = topic
        self.group = group
        self.member = member
        self.partitions: tuple[int, ...] = ()
        self.generation = -1
        self._http = http
        self._base = f"/topics/{topic}/groups/{group}"
        self._reset = "earliest" if from_beginning else "latest"
        self._heartbeat_s = heartbeat_s
        self._session_s = 10.0
        self._pending: list[_PendingAck] = []
        self._room = asyncio.Semaphore(max_pending_acks)
        self._flusher: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()
        self._lines: AsyncIterator[str] | None = None
        self._ended: str | None = None
        # Bounded by the broker: it sends at most its in-flight limit before acks come back.
        self._buffer: deque[ReceivedEvent] = deque()

    def __repr__(self) -> str:
        return (
            f"<Subscription {self.member} of {self.group} on {self.topic}: "
            f"partitions {list(self.partitions)}, {len(self._pending)} acks pending>"
        )

    async def __aenter__(self) -> Self:
        params = {"member": self.member, "reset": self._reset}
        response = await self._stack.enter_async_context(
            self._http.stream("GET", f"{self._base}/subscribe", params=params)
        )
        if response.status_code >= 400:
            await response.aread()
            await self._stack.aclose()
            _raise_for(response)
        self._lines = response.aiter_lines()
        announced = response.headers.get("x-gossamer-session-timeout-ms", "")
        if announced.isdigit():
            self._session_s = int(announced) / 1000
        self._heartbeat = asyncio.create_task(self._beat())
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Send the acks still pending, then leave the group (the broker rebalances)."""
        with contextlib.suppress(BrokerError, httpx.HTTPError):
            await self.flush()
        for task in (self._heartbeat, self._flusher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, BrokerError, httpx.HTTPError):
                    await task
        await self._stack.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ReceivedEvent:
        while not self._buffer:
            if self._ended is not None:
                raise StopAsyncIteration
            await self._read_line()
        return self._buffer.popleft()

    async def assignment(self, timeout: float = 30.0) -> tuple[int, ...]:
        """Wait for the broker's next assignment of partitions to this member (events that
        arrive meanwhile are kept for iteration)."""
        generation = self.generation
        async with asyncio.timeout(timeout):
            while self.generation == generation:
                await self._read_line()
        return self.partitions

    async def _read_line(self) -> None:
        assert self._lines is not None, "use `async with` before iterating"
        if self._ended is not None:
            raise SubscriptionEnded(self._ended)
        try:
            line = await anext(self._lines)
        except StopAsyncIteration:
            self._ended = "the broker closed the stream"
            raise SubscriptionEnded(self._ended) from None
        if not line:
            return
        data = json.loads(line)
        kind = data.get("kind")
        if kind == "event":
            self._buffer.append(ReceivedEvent.of(data))
        elif kind == "assignment":
            self.partitions = tuple(data["partitions"])
            self.generation = data["generation"]
        elif kind == "end":
            self._ended = data.get("reason", "ended")
            raise SubscriptionEnded(self._ended)

    async def ack(self, event: ReceivedEvent) -> None:
        """Mark an event handled; returns once the broker committed past it (or refused)."""
        await self._queue(event, None)

    async def nack(self, event: ReceivedEvent, error: str) -> None:
        """Mark an event failed: the broker retries it later, or dead-letters it when the topic
        says it has failed too often."""
        await self._queue(event, error or "failed")

    def ack_nowait(self, event: ReceivedEvent) -> asyncio.Future[None]:
        """Queue an ack without waiting; the future completes when it is committed."""
        return asyncio.ensure_future(self._queue(event, None))

    async def flush(self) -> None:
        """Wait until every queued ack has been sent."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _queue(self, event: ReceivedEvent, error: str | None) -> None:
        await self._room.acquire()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(lambda _: self._room.release())
        self._pending.append(_PendingAck(event.partition, event.offset, error, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_pending())
        await done

    async def _flush_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            body = {
                "member": self.member,
                "acks": [
                    {"partition": a.partition, "offset": a.offset}
                    | ({"error": a.error} if a.error is not None else {})
                    for a in batch
                ],
            }
            try:
                response = await self._http.post(f"{self._base}/ack", json=body)
                _raise_for(response)
            except (BrokerError, httpx.HTTPError) as error:
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(error)
                continue
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_result(None)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s or self._session_s / 3)
            try:
                response = await self._http.post(
                    f"{self._base}/heartbeat", json={"member": self.member}
                )
                _raise_for(response)
            except (BrokerError, httpx.HTTPError) as error:
                log.warning("heartbeat of %s failed: %s", self.member, error)


class SyncEventsClient:
    """The same client for code without an event loop: it runs one in a background thread."""

    def __init__(
        self,
        server: str | None = None,
        *,
        timeouts: ClientTimeouts | None = None,
        call_timeout_s: float = 60.0,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="gossamer-events-client", daemon=True
        )
        self._thread.start()
        self._call_timeout_s = call_timeout_s
        self._client = self._call(_make_client(server, timeouts))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close connections and stop the background loop."""
        self._call(self._client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self._call_timeout_s)
        self._loop.close()

    def publish(self, topic: str, payload: Any, **options: Any) -> Published:
        """See EventsClient.publish."""
        return self._call(self._client.publish(topic, payload, **options))

    def publish_batch(self, topic: str, drafts: Sequence[Draft]) -> list[Published]:
        """See EventsClient.publish_batch."""
        return self._call(self._client.publish_batch(topic, drafts))

    def topics(self) -> list[dict[str, Any]]:
        """See EventsClient.topics."""
        return self._call(self._client.topics())

    def read(self, topic: str, **options: Any) -> list[ReceivedEvent]:
        """See EventsClient.read."""
        return self._call(self._client.read(topic, **options))

    def query(self, sql: str, **options: Any) -> Any:
        """See EventsClient.query."""
        return self._call(self._client.query(sql, **options))

    def lag(self, topic: str | None = None, group: str | None = None) -> list[dict[str, Any]]:
        """See EventsClient.lag."""
        return self._call(self._client.lag(topic, group))

    def _call(self, work: Coroutine[Any, Any, T]) -> T:
        future: ThreadFuture[T] = asyncio.run_coroutine_threadsafe(work, self._loop)
        return future.result(self._call_timeout_s)


async def _make_client(server: str | None, timeouts: ClientTimeouts | None) -> EventsClient:
    # httpx binds its connection pool to the loop it is created on: create it on ours.
    return EventsClient(server, timeouts=timeouts)
