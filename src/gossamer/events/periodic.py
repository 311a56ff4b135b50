"""A background step repeated every period, that stops within a deadline when asked."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Periodic:
    """Runs `step` every `period_s` seconds in its own task until `stop`.

    Stopping sets a flag the loop checks as well as cancelling the task: a library that
    swallows a cancellation (asyncio.wait_for in Python 3.11 can) delays the stop by at most
    one period instead of hanging it. A failing step is logged and tried again next period.
    """

    def __init__(self, name: str, period_s: float, step: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self.period_s = period_s
        self.failures = 0
        self._step = step
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "running" if self._task and not self._task.done() else "stopped"
        return f"<Periodic {self.name} every {self.period_s:g}s: {state}, {self.failures} failures>"

    def start(self) -> None:
        """Start the loop."""
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the loop to end, and wait for it at most `timeout_s` seconds."""
        self._stopping.set()
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        self._task = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.period_s)
            if self._stopping.is_set():
                return
            try:
                await self._step()
            except Exception:  # a background step must not die quietly: log, retry later
                self.failures += 1
                log.warning("%s failed", self.name, exc_info=True)
