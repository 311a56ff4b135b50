"""Consumer groups: members and their sessions, partition assignment, delivery and commits.

The broker delivers to members (a push over a streaming response) instead of members fetching,
so a rebalance needs no stop-the-world protocol: when a member joins or leaves, partitions that
change owner are dropped by the old owner's cursor and picked up by the new owner at the
committed offset. Acks for a partition that moved are refused, so a late or zombie member can
never commit for a partition it lost. Delivery is at-least-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from gossamer.events.assignment import assign, partitions_of
from gossamer.events.cursor import Delivery, NackOutcome, PartitionCursor, RetryPolicy
from gossamer.events.errors import ConflictError, OverloadedError
from gossamer.events.log import EventLog
from gossamer.events.model import Event
from gossamer.events.periodic import Periodic
from gossamer.events.topics import TopicConfig

DeadLetter = Callable[[str, Event, int, str], Awaitable[None]]
"""Publishes (group, event, deliveries, reason) to the topic's dead-letter topic."""


@dataclass(frozen=True, slots=True)
class GroupSettings:
    """Sessions, flow control and redelivery of consumer groups."""

    session_timeout_s: float = 10.0
    keepalive_s: float = 2.0
    max_in_flight: int = 256
    read_batch: int = 256
    retry_backoff_s: float = 0.2
    retry_backoff_max_s: float = 10.0
    max_members: int = 256
    max_groups: int = 4096


class Reset(StrEnum):
    """Where a group starts on a partition it has never committed: the oldest or the next event."""

    EARLIEST = "earliest"
    LATEST = "latest"


@dataclass(frozen=True, slots=True)
class Ack:
    """A member's verdict on one delivered event; `error` set means it failed."""

    partition: int
    offset: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class AckResult:
    """Committed offsets after an ack, and the acks refused (partition moved or unknown event)."""

    committed: dict[int, int]
    rejected: list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Poll:
    """What a member's stream sends next: events, a new assignment, or why it ended."""

    deliveries: list[Delivery]
    assignment: tuple[int, ...] | None
    generation: int
    ended: str | None = None


class Member:
    """One connected consumer of a group."""

    __slots__ = ("ended", "generation", "id", "last_seen", "partitions", "sent_generation", "wake")

    def __init__(self, member_id: str) -> None:
        self.id = member_id
        self.last_seen = time.monotonic()
        self.wake = asyncio.Event()
        self.partitions: tuple[int, ...] = ()
        self.generation = 0
        self.sent_generation = -1
        self.ended: str | None = None

    def __repr__(self) -> str:
        return f"<Member {self.id}: partitions {list(self.partitions)}>"


class ConsumerGroup:
    """The members of one group on one topic, and the delivery state of its partitions."""

    def __init__(
        self,
        name: str,
        topic: TopicConfig,
        log: EventLog,
        settings: GroupSettings,
        dead_letter: DeadLetter,
    ) -> None:
        self.name = name
        self.topic = topic
        self.members: dict[str, Member] = {}
        self.owner: dict[int, str] = {}
        self.cursors: dict[int, PartitionCursor] = {}
        self.committed: dict[int, int] = {}
        self.generation = 0
        self.reset = Reset.LATEST
        self._log = log
        self._settings = settings
        self._dead_letter = dead_letter
        self._attempts: dict[int, dict[int, int]] = {}
        self._commit_lock = asyncio.Lock()
        self._loaded = False
        self._watcher: asyncio.Task[None] | None = None
        self._rotation = 0

    def __repr__(self) -> str:
        flight = sum(c.outstanding for c in self.cursors.values())
        return (
            f"<ConsumerGroup {self.name} on {self.topic.name}: {len(self.members)} members, "
            f"generation {self.generation}, {flight} in flight>"
        )

    @property
    def policy(self) -> RetryPolicy:
        """Redelivery of this group's failed events, capped by the topic's dead-letter rule."""
        return RetryPolicy(
            self._settings.retry_backoff_s,
            self._settings.retry_backoff_max_s,
            self.topic.max_deliveries if self.topic.dead_letter_topic else None,
        )

    async def join(self, member_id: str, reset: Reset) -> Member:
        """Add a member (replacing an older connection with its id) and rebalance."""
        if not self._loaded:
            self.committed = await self._log.committed(self.name, self.topic.name)
            self._loaded = True
        old = self.members.get(member_id)
        if old is None and len(self.members) >= self._settings.max_members:
            raise OverloadedError(f"group {self.name} has {len(self.members)} members already")
        if old is not None:
            self._end(old, "replaced by a newer connection of the same member")
        if not self.members:
            self.reset = reset
        member = Member(member_id)
        self.members[member_id] = member
        self._rebalance()
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch_appends())
        return member

    def leave(self, member: Member, reason: str) -> None:
        """Remove a member, if it is still the current one with its id, and rebalance."""
        if self.members.get(member.id) is not member:
            return
        del self.members[member.id]
        self._end(member, reason)
        self._rebalance()
        if not self.members and self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    def touch(self, member_id: str) -> Member:
        """A heartbeat: the member is alive. Unknown members are told to join again (409)."""
        member = self.members.get(member_id)
        if member is None:
            raise ConflictError(
                f"{member_id} is not a member of group {self.name}; subscribe again"
            )
        member.last_seen = time.monotonic()
        return member

    def expired(self, now: float) -> list[Member]:
        """Members whose last heartbeat is older than the session timeout."""
        timeout = self._settings.session_timeout_s
        return [m for m in self.members.values() if now - m.last_seen > timeout]

    def retopic(self, topic: TopicConfig) -> None:
        """The topic was reconfigured (e.g. more partitions): rebalance over the new layout."""
        self.topic = topic
        for cursor in self.cursors.values():
            cursor.policy = self.policy
        if self.members:
            self._rebalance()

    async def poll(self, member: Member) -> Poll:
        """Wait up to the keepalive period for events or news for a member's stream."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.keepalive_s
        while True:
            if member.ended is not None:
                return Poll([], None, self.generation, member.ended)
            changed = None
            generation = member.generation
            if member.sent_generation != generation:
                member.sent_generation = generation
                changed = member.partitions
            member.wake.clear()
            deliveries = await self._gather(member)
            if deliveries or changed is not None:
                # The generation that goes with `changed`: a rebalance during the gather is
                # announced by the next poll.
                return Poll(deliveries, changed, generation)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return Poll([], None, member.generation)
            due = self._next_due(member)
            if due is not None:
                remaining = min(remaining, max(0.0, due - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(member.wake.wait(), remaining)

    async def ack(self, member_id: str, acks: Sequence[Ack]) -> AckResult:
        """Apply a member's acks and failures, dead-letter exhausted events, commit progress."""
        self.touch(member_id)
        rejected: list[tuple[int, int]] = []
        touched: set[int] = set()
        now = time.monotonic()
        for ack in acks:
            cursor = self.cursors.get(ack.partition)
            if cursor is None or self.owner.get(ack.partition) != member_id:
                rejected.append((ack.partition, ack.offset))
            elif ack.error is None:
                if cursor.ack(ack.offset):
                    touched.add(ack.partition)
                else:
                    rejected.append((ack.partition, ack.offset))
            else:
                outcome = cursor.nack(ack.offset, now)
                if outcome is NackOutcome.UNKNOWN:
                    rejected.append((ack.partition, ack.offset))
                elif outcome is NackOutcome.DEAD_LETTER:
                    delivery = cursor.in_flight(ack.offset)
                    assert delivery is not None
                    await self._send_to_dead_letter(cursor, delivery, ack.error)
                    touched.add(ack.partition)
        await self._commit(touched)
        member = self.members.get(member_id)
        if member is not None:
            member.wake.set()
        return AckResult({p: self.committed[p] for p in sorted(touched)}, rejected)

    async def seek(self, offsets: dict[int, int]) -> None:
        """Move the group's committed offsets; owners restart delivery from there."""
        async with self._commit_lock:
            await self._log.commit(self.name, self.topic.name, offsets)
            self.committed.update(offsets)
            for partition in offsets:
                cursor = self.cursors.pop(partition, None)
                if cursor is not None:
                    cursor.abandon()
                self._attempts.pop(partition, None)
        for member in self.members.values():
            member.wake.set()

    def close(self, reason: str) -> None:
        """End every member's stream."""
        for member in list(self.members.values()):
            self.leave(member, reason)

    def _end(self, member: Member, reason: str) -> None:
        member.ended = reason
        member.wake.set()

    def _rebalance(self) -> None:
        new = assign(self.topic.partitions, list(self.members), self.owner)
        for partition in range(self.topic.partitions):
            if new.get(partition) != self.owner.get(partition):
                cursor = self.cursors.pop(partition, None)
                if cursor is not None:
                    self._attempts[partition] = cursor.abandon()
        self.owner = new
        self.generation += 1
        for member in self.members.values():
            member.partitions = partitions_of(new, member.id)
            member.generation = self.generation
            member.wake.set()

    async def _watch_appends(self) -> None:
        signal = self._log.appended()
        seen = signal.version(self.topic.name)
        while self.members:
            await signal.wait(self.topic.name, seen, self._settings.keepalive_s)
            version = signal.version(self.topic.name)
            if version != seen:
                seen = version
                for member in self.members.values():
                    member.wake.set()

    async def _cursor(self, member: Member, partition: int) -> PartitionCursor | None:
        cursor = self.cursors.get(partition)
        if cursor is None and partition not in self.committed:
            states = await self._log.partitions(self.topic.name)
            state = states[partition]
            start = state.start if self.reset is Reset.EARLIEST else state.end
            # Fixed durably now, so that events published before the first delivery are not
            # skipped by a restart that would otherwise start again from the (later) end.
            async with self._commit_lock:
                if partition not in self.committed:
                    await self._log.commit(self.name, self.topic.name, {partition: start})
                    self.committed[partition] = start
        if self.owner.get(partition) != member.id:
            return None
        cursor = self.cursors.get(partition)
        if cursor is None:
            previous = self._attempts.pop(partition, None)
            cursor = PartitionCursor(partition, self.committed[partition], self.policy, previous)
            self.cursors[partition] = cursor
        return cursor

    async def _gather(self, member: Member) -> list[Delivery]:
        now = time.monotonic()
        out: list[Delivery] = []
        cursors: list[PartitionCursor] = []
        for partition in member.partitions:
            cursor = await self._cursor(member, partition)
            if cursor is not None:
                cursors.append(cursor)
                out.extend(cursor.due(now))
        room = self._settings.max_in_flight - sum(c.outstanding for c in cursors)
        # Start at a different partition each time so a backlog in one cannot starve the rest.
        self._rotation += 1
        for index in range(len(cursors)):
            if room <= 0:
                break
            cursor = cursors[(index + self._rotation) % len(cursors)]
            limit = min(room, self._settings.read_batch)
            events = await self._log.read(
                self.topic.name, cursor.partition, cursor.next_read, limit
            )
            if self.cursors.get(cursor.partition) is not cursor:
                continue
            delivered = cursor.deliver(events)
            room -= len(delivered)
            out.extend(delivered)
        return await self._drop_exhausted(out)

    async def _drop_exhausted(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Events already delivered the maximum times (their consumers died) go to dead letter."""
        limit = self.policy.max_deliveries
        if limit is None:
            return deliveries
        keep: list[Delivery] = []
        touched: set[int] = set()
        for delivery in deliveries:
            if delivery.deliveries <= limit:
                keep.append(delivery)
                continue
            cursor = self.cursors.get(delivery.event.partition)
            if cursor is not None:
                reason = f"not acknowledged after {limit} deliveries"
                await self._send_to_dead_letter(cursor, delivery, reason)
                touched.add(delivery.event.partition)
        await self._commit(touched)
        return keep

    async def _send_to_dead_letter(
        self, cursor: PartitionCursor, delivery: Delivery, reason: str
    ) -> None:
        count = min(delivery.deliveries, self.policy.max_deliveries or delivery.deliveries)
        await self._dead_letter(self.name, delivery.event, count, reason)
        cursor.ack(delivery.event.offset)

    async def _commit(self, partitions: Iterable[int]) -> None:
        async with self._commit_lock:
            offsets: dict[int, int] = {}
            for partition in partitions:
                cursor = self.cursors.get(partition)
                if cursor is None:
                    continue
                offset = cursor.committable()
                if offset > self.committed.get(partition, -1):
                    offsets[partition] = offset
            if offsets:
                await self._log.commit(self.name, self.topic.name, offsets)
                self.committed.update(offsets)

    def _next_due(self, member: Member) -> float | None:
        dues = [
            due
            for p in member.partitions
            if (cursor := self.cursors.get(p)) is not None
            and (due := cursor.next_due()) is not None
        ]
        return min(dues, default=None)


class GroupCoordinator:
    """Every consumer group of a broker, and the reaper that ends members' expired sessions."""

    def __init__(self, log: EventLog, settings: GroupSettings, dead_letter: DeadLetter) -> None:
        self.settings = settings
        self._log = log
        self._dead_letter = dead_letter
        self._groups: dict[tuple[str, str], ConsumerGroup] = {}
        period = max(0.05, min(1.0, settings.session_timeout_s / 4))
        self._reaper = Periodic("session reaper", period, self._reap)

    def __repr__(self) -> str:
        members = sum(len(g.members) for g in self._groups.values())
        return f"<GroupCoordinator: {len(self._groups)} active groups, {members} members>"

    def start(self) -> None:
        """Start ending sessions that stop heartbeating."""
        self._reaper.start()

    def end_sessions(self, reason: str) -> None:
        """End every member's stream, in every group."""
        for group in self._groups.values():
            group.close(reason)

    async def stop(self) -> None:
        """End every member's stream and stop the reaper."""
        self.end_sessions("the broker is shutting down")
        await self._reaper.stop()

    def group(self, topic: TopicConfig, name: str) -> ConsumerGroup:
        """The active group of that name on that topic, created on first use."""
        key = (topic.name, name)
        group = self._groups.get(key)
        if group is None:
            if len(self._groups) >= self.settings.max_groups:
                self._forget_idle()
            if len(self._groups) >= self.settings.max_groups:
                raise OverloadedError(f"{len(self._groups)} consumer groups are active already")
            group = ConsumerGroup(name, topic, self._log, self.settings, self._dead_letter)
            self._groups[key] = group
        return group

    def active(self, topic: str) -> list[ConsumerGroup]:
        """Groups of a topic that are in memory (with members, or recently used)."""
        return [g for (t, _), g in sorted(self._groups.items()) if t == topic]

    def retopic(self, topic: TopicConfig) -> None:
        """Pass a topic's new configuration to its groups."""
        for group in self.active(topic.name):
            group.retopic(topic)

    def _forget_idle(self) -> None:
        for key, group in list(self._groups.items()):
            if not group.members:
                del self._groups[key]

    async def _reap(self) -> None:
        now = time.monotonic()
        for group in list(self._groups.values()):
            for member in group.expired(now):
                group.leave(member, "session timed out: no heartbeat")
