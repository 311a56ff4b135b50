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


async def test_no_loop_timer_is_left_for_timeouts_that_were_all_cancelled() -> None:
    # A proxy whose requests all finish in time is not woken for their timeouts.
    wheel = TimerWheel(asyncio.get_running_loop(), tick=0.01)
    for _ in range(3):
        timeouts = [wheel.call_later(0.03, lambda: None) for _ in range(50)]
        for timeout in timeouts:
            timeout.cancel()
        await asyncio.sleep(0.015)
    assert len(wheel) == 0
    await asyncio.sleep(0.1)  # the timer armed for the first of them has fired, found nothing
    assert not wheel.armed


async def test_a_timeout_set_from_a_callback_still_lets_earlier_ones_fire_on_time() -> None:
    loop = asyncio.get_running_loop()
    wheel = TimerWheel(loop, tick=0.01)
    fired: dict[str, float] = {}
    started = loop.time()

    def first() -> None:
        fired["first"] = loop.time() - started
        wheel.call_later(0.5, lambda: fired.setdefault("late", loop.time() - started))

    wheel.call_later(0.02, first)
    wheel.call_later(0.08, lambda: fired.setdefault("second", loop.time() - started))
    await asyncio.sleep(0.2)
    assert 0.02 <= fired["first"] < 0.08
    assert 0.08 <= fired["second"] < 0.15
    assert "late" not in fired
