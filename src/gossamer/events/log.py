"""The durable log's interface, which the embedded sqlite log and NATS JetStream both implement."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from gossamer.events.model import Event, NewEvent
from gossamer.events.topics import TopicConfig


@dataclass(frozen=True, slots=True)
class Appended:
    """Where a published event landed; `duplicate` when its id was already in the topic."""

    id: str
    partition: int
    offset: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class PartitionState:
    """A partition's bounds: offsets `start` (oldest kept) up to `end` (the next to be written)."""

    partition: int
    start: int
    end: int
    bytes: int

    @property
    def span(self) -> int:
        """Offsets between start and end; compaction can leave fewer events than this."""
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Maintenance:
    """What one retention and compaction pass over a topic removed."""

    topic: str
    expired: int = 0
    compacted: int = 0


class EventLog(Protocol):
    """Append-only, partitioned, durable storage of events and of consumer groups' offsets.

    `append` returns only once the events will survive a kill -9 of the broker. Offsets within a
    partition only grow; retention removes the oldest, compaction removes superseded keys.
    """

    async def open(self) -> None:
        """Connect or create storage, and learn the topics it holds."""

    async def close(self) -> None:
        """Finish pending writes and release storage."""

    async def declare(self, config: TopicConfig) -> None:
        """Create a topic or apply a new configuration (partitions can only grow)."""

    async def topics(self) -> list[TopicConfig]:
        """Every topic the log holds, in name order."""

    async def append(self, topic: str, events: Sequence[tuple[int, NewEvent]]) -> list[Appended]:
        """Durably append events, each to its given partition; ids already present are skipped."""

    async def read(self, topic: str, partition: int, offset: int, limit: int) -> list[Event]:
        """Up to `limit` events of a partition from `offset` on (the next one kept if compacted)."""

    async def partitions(self, topic: str) -> list[PartitionState]:
        """The bounds of each partition of a topic."""

    async def offset_for_time(self, topic: str, partition: int, time_ms: int) -> int:
        """The first offset whose event time is at or after `time_ms`; the end when none is."""

    async def commit(self, group: str, topic: str, offsets: Mapping[int, int]) -> None:
        """Durably record a group's next offset to consume, per partition."""

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        """A group's committed offsets on a topic, per partition."""

    async def groups(self) -> list[tuple[str, str]]:
        """(topic, group) pairs that have committed offsets."""

    async def maintain(self, topic: str, now_ms: int) -> Maintenance:
        """Apply retention and compaction to a topic once, without stalling publishers."""

    def appended(self) -> AppendSignal:
        """Wakes readers when events are appended."""


class AppendSignal:
    """A per-topic version that grows on every append; readers wait for it to pass what they saw."""

    __slots__ = ("_versions", "_waiters")

    def __init__(self) -> None:
        self._versions: dict[str, int] = {}
        self._waiters: dict[str, asyncio.Event] = {}

    def version(self, topic: str) -> int:
        """The current version of a topic; pass it to `wait` to sleep until the next append."""
        return self._versions.get(topic, 0)

    def bump(self, topic: str) -> None:
        """Record an append and wake everyone waiting on the topic (call on the event loop)."""
        self._versions[topic] = self._versions.get(topic, 0) + 1
        waiter = self._waiters.pop(topic, None)
        if waiter is not None:
            waiter.set()

    async def wait(self, topic: str, seen: int, timeout: float) -> bool:
        """Wait until the topic's version passes `seen`, at most `timeout` seconds."""
        if self.version(topic) != seen:
            return True
        waiter = self._waiters.setdefault(topic, asyncio.Event())
        try:
            await asyncio.wait_for(waiter.wait(), timeout)
        except TimeoutError:
            return False
        return True
