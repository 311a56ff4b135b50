"""Membership of a consumer group, as the client holds it: events in, acks out, heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import httpx

from gossamer.events.wire import BrokerError, ReceivedEvent, SubscriptionEnded, raise_for

log = logging.getLogger(__name__)


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
            raise_for(response)
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
                raise_for(response)
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
                raise_for(response)
            except (BrokerError, httpx.HTTPError) as error:
                log.warning("heartbeat of %s failed: %s", self.member, error)
