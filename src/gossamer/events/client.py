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
import os
import socket
import threading
import urllib.request
import uuid
from collections.abc import AsyncGenerator, Coroutine, Mapping, Sequence
from concurrent.futures import Future as ThreadFuture
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

import httpx

from gossamer.events.model import format_time
from gossamer.events.subscription import Subscription
from gossamer.events.wire import (
    BrokerError,
    Draft,
    Published,
    ReceivedEvent,
    SchemaError,
    SubscriptionEnded,
    raise_for,
)

__all__ = [
    "BrokerError",
    "ClientTimeouts",
    "Draft",
    "EventsClient",
    "Published",
    "ReceivedEvent",
    "SchemaError",
    "Subscription",
    "SubscriptionEnded",
    "SyncEventsClient",
    "resolve_server",
]

DEFAULT_SERVER = "http://127.0.0.1:15070"
_NO_DELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
SERVER_ENV = "GOSSAMER_EVENTS"
T = TypeVar("T")


def resolve_server(explicit: str | None = None) -> str:
    """The broker to use: the given URL, then $GOSSAMER_EVENTS, then the local default."""
    return (explicit or os.environ.get(SERVER_ENV) or DEFAULT_SERVER).rstrip("/")


def environment_proxy(url: str) -> str | None:
    """The proxy $HTTP_PROXY (or $HTTPS_PROXY) names for `url`, unless $NO_PROXY exempts it.

    An app of the mesh reaches the broker through its sidecar this way; httpx would ignore
    these variables because the client brings a transport of its own."""
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy is None or urllib.request.proxy_bypass(parts.netloc):
        return None
    return proxy


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
            transport=httpx.AsyncHTTPTransport(
                limits=limits, socket_options=_NO_DELAY, proxy=environment_proxy(self.server)
            ),
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
        raise_for(response)
        return response.text if output == "csv" else response.json()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._http.request(method, path, **kwargs)
        raise_for(response)
        return response.json()

    async def _stream_events(
        self, topic: str, params: dict[str, str]
    ) -> AsyncGenerator[ReceivedEvent, None]:
        async with self._http.stream("GET", f"/topics/{topic}/events", params=params) as response:
            if response.status_code >= 400:
                await response.aread()
                raise_for(response)
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
