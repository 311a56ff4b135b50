"""Coarse timers for the hot path: timeouts due in the same tick share a bucket, and one
event-loop timer serves them all.

A loop timer per request costs more than the request's routing; timeouts need no sub-tick
precision, so each is rounded up to the next tick (10 ms by default) and fires at most that late.

Nearly every timeout is cancelled long before it is due (the request finished). A bucket that
its last cancellation empties is forgotten at once: kept, it would hold a hash table sized for
its busiest moment for as long as the timeout (15 s of them at tens of thousands of requests a
second is megabytes). The wheel keeps the ticks that have buckets in a heap and one loop timer
armed for the earliest; a tick whose bucket is gone is skipped when the timer is re-armed, so a
proxy whose requests all finish in time is not woken for them, and no loop timer is made or
cancelled per request.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Callable
from heapq import heappop, heappush
from typing import Final

TICK = 0.01
_NEVER: Final = sys.maxsize
"""Later than any tick: what `TimerWheel._armed` holds while no loop timer is set."""


class Timeout:
    """A scheduled callback; `cancel` takes it out of its bucket, so nothing it holds lingers."""

    __slots__ = ("bucket", "callback", "key", "wheel")

    def __init__(
        self, callback: Callable[[], None], key: int, bucket: set[Timeout], wheel: TimerWheel
    ) -> None:
        self.callback: Callable[[], None] | None = callback
        self.key = key
        """The tick the timeout is due in; `bucket` holds the timeouts due then."""
        self.bucket = bucket
        self.wheel = wheel

    def cancel(self) -> None:
        """Never call back."""
        self.callback = None
        bucket = self.bucket
        bucket.discard(self)
        if not bucket:
            self.wheel.drop(self.key, bucket)


class TimerWheel:
    """Buckets of timeouts by tick; one loop timer, armed for the earliest tick with a bucket."""

    __slots__ = ("_armed", "_buckets", "_handle", "_loop", "_ticks", "_ticks_queued", "tick")

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float = TICK) -> None:
        self._loop = loop
        self.tick = tick
        self._buckets: dict[int, set[Timeout]] = {}
        self._ticks: list[int] = []
        """A heap of the ticks that have (or had) a bucket; each once (`_ticks_queued`)."""
        self._ticks_queued: set[int] = set()
        self._armed = _NEVER
        self._handle: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        """Buckets waiting to fire (each holds at least one live timeout)."""
        return len(self._buckets)

    @property
    def armed(self) -> bool:
        """Whether a loop timer is set (to wake the loop for a live timeout)."""
        return self._handle is not None

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timeout:
        """Call `callback` after `delay` seconds (up to one tick later)."""
        key = math.ceil((self._loop.time() + delay) / self.tick)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = set()
            if key not in self._ticks_queued:
                self._ticks_queued.add(key)
                heappush(self._ticks, key)
            if key < self._armed:
                self._arm(key)
        timeout = Timeout(callback, key, bucket, self)
        bucket.add(timeout)
        return timeout

    def drop(self, key: int, bucket: set[Timeout]) -> None:
        """Forget tick `key`'s bucket, whose timeouts were all cancelled (the tick is skipped
        later); a bucket made since for the same tick is kept."""
        if self._buckets.get(key) is bucket:
            del self._buckets[key]

    def _arm(self, key: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = key
        self._handle = self._loop.call_at(key * self.tick, self._fire)

    def _fire(self) -> None:
        # Every tick up to now is due, the one the timer was armed for included (a loop may
        # call back a little before the time it was given).
        due = max(self._armed, math.floor(self._loop.time() / self.tick))
        self._handle = None
        self._armed = _NEVER
        ticks = self._ticks
        while ticks and ticks[0] <= due:
            key = heappop(ticks)
            self._ticks_queued.discard(key)
            bucket = self._buckets.pop(key, None)
            if bucket is None:
                continue
            for timeout in list(bucket):
                callback = timeout.callback
                if callback is not None:
                    timeout.callback = None
                    callback()
        # Ticks whose buckets were all cancelled wake nobody.
        while ticks and ticks[0] not in self._buckets:
            self._ticks_queued.discard(heappop(ticks))
        # A callback may have set a timer already, for a later tick than the first left.
        if ticks and ticks[0] < self._armed:
            self._arm(ticks[0])
