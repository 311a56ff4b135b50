"""Coarse timers for the hot path: timeouts due in the same tick share one event-loop timer.

A loop timer per request costs more than the request's routing; timeouts need no sub-tick
precision, so each is rounded up to the next tick (10 ms by default) and fires at most that late.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

TICK = 0.01


class Timeout:
    """A scheduled callback; `cancel` takes it out of its bucket, so nothing it holds lingers."""

    __slots__ = ("bucket", "callback")

    def __init__(self, callback: Callable[[], None], bucket: set[Timeout]) -> None:
        self.callback: Callable[[], None] | None = callback
        self.bucket = bucket

    def cancel(self) -> None:
        """Never call back."""
        self.callback = None
        self.bucket.discard(self)


class TimerWheel:
    """Buckets of timeouts by tick, each bucket fired by one loop.call_at."""

    __slots__ = ("_buckets", "_loop", "tick")

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float = TICK) -> None:
        self._loop = loop
        self.tick = tick
        self._buckets: dict[int, set[Timeout]] = {}

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timeout:
        """Call `callback` after `delay` seconds (up to one tick later)."""
        key = math.ceil((self._loop.time() + delay) / self.tick)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = set()
            self._loop.call_at(key * self.tick, self._fire, key)
        timeout = Timeout(callback, bucket)
        bucket.add(timeout)
        return timeout

    def _fire(self, key: int) -> None:
        for timeout in list(self._buckets.pop(key, ())):
            callback = timeout.callback
            if callback is not None:
                timeout.callback = None
                callback()
