"""Background loops stop when asked, even when a step swallows its cancellation."""

import asyncio
import contextlib
import time

from gossamer.events.periodic import Periodic


async def test_stop_ends_a_loop_whose_step_swallows_cancellation() -> None:
    entered = asyncio.Event()

    async def stubborn() -> None:
        entered.set()
        # Swallowing the cancellation, as asyncio.wait_for can in Python 3.11 on a race.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)

    loop = Periodic("stubborn", 0.001, stubborn)
    loop.start()
    await asyncio.wait_for(entered.wait(), 5)
    started = time.monotonic()
    await loop.stop(timeout_s=5)
    assert time.monotonic() - started < 1
    assert "stopped" in repr(loop)


async def test_a_failing_step_is_logged_and_tried_again() -> None:
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("disk full")

    loop = Periodic("failing", 0.001, failing)
    loop.start()
    deadline = time.monotonic() + 5
    while loop.failures < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    await loop.stop()
    assert loop.failures >= 3
    assert calls == loop.failures
