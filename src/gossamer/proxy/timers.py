"""Coarse timers for the hot path: timeouts due in the same tick share one event-loop timer.

A loop timer per request costs more than the request's routing; timeouts need no sub-tick
precision, so each is rounded up to the next tick (10 ms by default) and fires at most that late.

Nearly every timeout is cancelled long before it is due (the request finished). A bucket that
its last cancellation empties is dropped at once, with its loop timer: otherwise every bucket
would be kept, with a hash table sized for its busiest moment, for as long as the timeout
(15 s of them at tens of thousands of requests a second is megabytes), and its timer would
still wake the loop.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

TICK = 0.01


class _Bucket(set["Timeout"]):
    """The timeouts due in one tick, and the loop timer that fires them."""

    __slots__ = ("handle", "key")

    def __init__(self, key: int) -> None:
        super().__init__()
        self.key = key
        self.handle: asyncio.TimerHandle | None = None


class Timeout:
    """A scheduled callback; `cancel` takes it out of its bucket, so nothing it holds lingers."""

    __slots__ = ("bucket", "callback", "wheel")

    def __init__(self, callback: Callable[[], None], bucket: _Bucket, wheel: TimerWheel) -> None:
        self.callback: Callable[[], None] | None = callback
        self.bucket = bucket
        self.wheel = wheel

    def cancel(self) -> None:
        """Never call back."""
        self.callback = None
        bucket = self.bucket
        bucket.discard(self)
        if not bucket:
            self.wheel.drop(bucket)


class TimerWheel:
    """Buckets of timeouts by tick, each bucket fired by one loop.call_at."""

    __slots__ = ("_buckets", "_loop", "tick")

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float = TICK) -> None:
        self._loop = loop
        self.tick = tick
        self._buckets: dict[int, _Bucket] = {}

    def __len__(self) -> int:
        """Buckets waiting to fire (each holds at least one live timeout)."""
        return len(self._buckets)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timeout:
        """Call `callback` after `delay` seconds (up to one tick later)."""
        key = math.ceil((self._loop.time() + delay) / self.tick)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(key)
            bucket.handle = self._loop.call_at(key * self.tick, self._fire, key)
        timeout = Timeout(callback, bucket, self)
        bucket.add(timeout)
        return timeout

    def drop(self, bucket: _Bucket) -> None:
        """Forget a bucket whose timeouts were all cancelled, and its loop timer."""
        if self._buckets.get(bucket.key) is bucket:
            del self._buckets[bucket.key]
            if bucket.handle is not None:
                bucket.handle.cancel()

    def _fire(self, key: int) -> None:
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            return
        for timeout in list(bucket):
            callback = timeout.callback
            if callback is not None:
                timeout.callback = None
                callback()
