"""The hot path's coarse timers: due ones fire about on time, cancelled ones leave nothing."""

from __future__ import annotations

import asyncio

from gossamer.proxy.timers import TimerWheel


async def test_a_timeout_fires_after_its_delay_and_at_most_a_tick_late() -> None:
    loop = asyncio.get_running_loop()
    wheel = TimerWheel(loop, tick=0.01)
    fired: list[float] = []
    started = loop.time()
    wheel.call_later(0.05, lambda: fired.append(loop.time() - started))
    await asyncio.sleep(0.2)
    assert len(fired) == 1
    assert 0.05 <= fired[0] < 0.05 + 0.01 + 0.05  # a tick, plus the loop's own slack
    assert len(wheel) == 0


async def test_cancelled_timeouts_leave_no_bucket_and_never_fire() -> None:
    # As requests do: thousands of long timeouts, nearly all cancelled at once.
    wheel = TimerWheel(asyncio.get_running_loop(), tick=0.01)
    fired: list[int] = []
    timeouts = [
        wheel.call_later(0.02 + i / 10_000, lambda i=i: fired.append(i)) for i in range(2000)
    ]
    assert len(wheel) > 10
    kept = timeouts.pop()
    for timeout in timeouts:
        timeout.cancel()
    assert len(wheel) == 1  # only the bucket of the one left
    await asyncio.sleep(0.3)
    assert fired == [1999]
    kept.cancel()  # after firing: harmless
    assert len(wheel) == 0


async def test_a_callback_may_cancel_another_timeout_of_its_own_tick() -> None:
    wheel = TimerWheel(asyncio.get_running_loop(), tick=0.05)
    fired: list[str] = []
    second = None

    def first() -> None:
        fired.append("first")
        assert second is not None
        second.cancel()

    wheel.call_later(0.01, first)
    second = wheel.call_later(0.01, lambda: fired.append("second"))
    await asyncio.sleep(0.15)
    assert fired in (["first"], ["second", "first"])
    assert len(wheel) == 0
