"""Delivery state of one partition for the group member that owns it: sans-IO, clock passed in.

Events are delivered in offset order and may be acknowledged in any order. The committed
offset is the lowest offset still unacknowledged (in flight or waiting to be retried), or the
next one to read when nothing is outstanding: everything below it has been handled.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from enum import Enum

from gossamer.events.model import Event


@dataclass(frozen=True, slots=True)
class Delivery:
    """An event sent to a member, and how many times it has now been delivered."""

    event: Event
    deliveries: int


class NackOutcome(Enum):
    """What a failed delivery leads to."""

    RETRY = "retry"
    DEAD_LETTER = "dead-letter"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Redelivery after a failure: exponential backoff, and a cap on deliveries (None: none)."""

    backoff_s: float = 0.2
    backoff_max_s: float = 10.0
    max_deliveries: int | None = None

    def delay(self, deliveries: int) -> float:
        """Seconds to wait before delivery number `deliveries + 1`."""
        return min(self.backoff_s * 2.0 ** max(0, deliveries - 1), self.backoff_max_s)

    def exhausted(self, deliveries: int) -> bool:
        """True once an event has been delivered as many times as allowed."""
        return self.max_deliveries is not None and deliveries >= self.max_deliveries


class PartitionCursor:
    """Which events of a partition are out with the owner, waiting for a retry, or done."""

    __slots__ = (
        "_in_flight",
        "_previous",
        "_retry_at",
        "_retry_heap",
        "next_read",
        "partition",
        "policy",
    )

    def __init__(
        self,
        partition: int,
        committed: int,
        policy: RetryPolicy,
        previous: dict[int, int] | None = None,
    ) -> None:
        """Start at the committed offset; `previous` counts deliveries made by past owners."""
        self.partition = partition
        self.next_read = committed
        self.policy = policy
        self._previous = previous or {}
        self._in_flight: dict[int, Delivery] = {}
        self._retry_at: dict[int, Delivery] = {}
        self._retry_heap: list[tuple[float, int]] = []

    def __repr__(self) -> str:
        return (
            f"<PartitionCursor {self.partition}: next {self.next_read}, "
            f"{len(self._in_flight)} in flight, {len(self._retry_at)} to retry>"
        )

    @property
    def outstanding(self) -> int:
        """Events delivered and not yet acknowledged, including those waiting for a retry."""
        return len(self._in_flight) + len(self._retry_at)

    def committable(self) -> int:
        """The offset below which every event has been acknowledged."""
        lowest = min(self._in_flight, default=self.next_read)
        return min(lowest, min(self._retry_at, default=self.next_read))

    def deliver(self, events: list[Event]) -> list[Delivery]:
        """Take events read from `next_read` on, counting deliveries made by past owners."""
        out: list[Delivery] = []
        for event in events:
            delivery = Delivery(event, self._previous.pop(event.offset, 0) + 1)
            self._in_flight[event.offset] = delivery
            out.append(delivery)
        if events:
            self.next_read = events[-1].offset + 1
        return out

    def ack(self, offset: int) -> bool:
        """Mark an event handled; False when this cursor does not have it out."""
        if self._in_flight.pop(offset, None) is not None:
            return True
        return self._retry_at.pop(offset, None) is not None

    def in_flight(self, offset: int) -> Delivery | None:
        """The delivery of an event now out with the member, if it is."""
        return self._in_flight.get(offset)

    def nack(self, offset: int, now: float) -> NackOutcome:
        """A failed delivery: schedule a retry, or say the event goes to the dead-letter topic.

        A dead-lettered event stays in flight until `ack` once it has been published there.
        """
        delivery = self._in_flight.get(offset)
        if delivery is None:
            return NackOutcome.UNKNOWN
        if self.policy.exhausted(delivery.deliveries):
            return NackOutcome.DEAD_LETTER
        del self._in_flight[offset]
        self._retry_at[offset] = delivery
        heapq.heappush(self._retry_heap, (now + self.policy.delay(delivery.deliveries), offset))
        return NackOutcome.RETRY

    def due(self, now: float) -> list[Delivery]:
        """Retries whose backoff has passed, delivered again (their count goes up by one)."""
        out: list[Delivery] = []
        while self._retry_heap and self._retry_heap[0][0] <= now:
            _, offset = heapq.heappop(self._retry_heap)
            waiting = self._retry_at.pop(offset, None)
            if waiting is None:
                continue
            again = Delivery(waiting.event, waiting.deliveries + 1)
            self._in_flight[offset] = again
            out.append(again)
        return out

    def next_due(self) -> float | None:
        """When the earliest retry is due, if any is waiting."""
        while self._retry_heap and self._retry_heap[0][1] not in self._retry_at:
            heapq.heappop(self._retry_heap)
        return self._retry_heap[0][0] if self._retry_heap else None

    def abandon(self) -> dict[int, int]:
        """The partition leaves this owner: how often each unacknowledged event has failed.

        A failed (nacked) event counts every delivery. When the owner disappears, only the
        oldest event still out with it counts as failed, the one it was most likely handling:
        events queued behind it count as not delivered, so one poison event that kills its
        consumers is the only one that ends up in the dead-letter topic.
        """
        counts = dict(self._previous)
        counts.update({offset: d.deliveries for offset, d in self._retry_at.items()})
        if self._in_flight:
            oldest = min(self._in_flight)
            for offset, delivery in self._in_flight.items():
                blamed = delivery.deliveries if offset == oldest else delivery.deliveries - 1
                if blamed:
                    counts[offset] = blamed
        self._in_flight.clear()
        self._retry_at.clear()
        self._retry_heap.clear()
        return counts
