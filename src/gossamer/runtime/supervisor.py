"""The supervisor of `gossamer up`: starts processes in dependency order, restarts, stops them."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from types import TracebackType

from gossamer.runtime.backoff import BackoffPolicy
from gossamer.runtime.process import ReadinessSignal, SupervisedProcess, wait_any
from gossamer.runtime.spec import ProcessSpec, start_waves
from gossamer.runtime.status import EventStream, ProcessEvent, ProcessStatus

log = logging.getLogger(__name__)

EventCallback = Callable[[ProcessEvent], None]


class Supervisor:
    """Runs a set of processes on one host, each in its own process group.

    A process starts once every process in its `after` is ready; one that exits is restarted
    as its restart policy says, after a CrashLoopBackOff delay. `stop()` stops them in waves,
    dependents before what they depend on; each gets SIGTERM, its grace period, then SIGKILL,
    and the whole stop takes at most `stop_timeout_s` (plus a short wait after each SIGKILL).
    Used as `async with Supervisor(specs) as supervisor:`, it stops on the way out, also when
    the block is cancelled (Ctrl-C under asyncio.run).

    Changes are delivered to callbacks (`subscribe`) and to bounded streams (`events`).
    """

    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        *,
        backoff: BackoffPolicy | None = None,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self.stop_timeout_s = stop_timeout_s
        self._waves = start_waves(specs)
        self._readiness_changed = ReadinessSignal()
        self._callbacks: list[EventCallback] = []
        self._streams: set[EventStream] = set()
        self._processes: dict[str, SupervisedProcess] = {}
        by_name = {spec.name: spec for spec in specs}
        for wave in self._waves:
            for name in wave:
                spec = by_name[name]
                self._processes[name] = SupervisedProcess(
                    spec,
                    backoff or BackoffPolicy(),
                    [self._processes[dependency] for dependency in spec.after],
                    self._readiness_changed,
                    self._publish,
                )
        self._started = False

    def __repr__(self) -> str:
        phases = Counter(process.status.phase for process in self._processes.values())
        ready = sum(process.ready for process in self._processes.values())
        counts = ", ".join(f"{count} {phase.value.lower()}" for phase, count in phases.items())
        return f"<Supervisor {len(self._processes)} processes, {ready} ready: {counts}>"

    @property
    def waves(self) -> tuple[tuple[str, ...], ...]:
        """The start order: each wave only depends on the waves before it."""
        return self._waves

    def status(self, name: str) -> ProcessStatus:
        """The latest status of one process (KeyError for an unknown name)."""
        return self._processes[name].status

    def statuses(self) -> tuple[ProcessStatus, ...]:
        """The latest status of every process, in start order."""
        return tuple(process.status for process in self._processes.values())

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call `callback` with every event, synchronously; returns the unsubscribe function.

        A callback that raises is logged and keeps receiving events.
        """
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback)

    def events(self, limit: int = 1000) -> EventStream:
        """A stream of every event from now on; it ends once `stop()` has finished."""
        stream = EventStream(limit, self._streams.discard)
        self._streams.add(stream)
        return stream

    def start(self) -> None:
        """Start supervising: every process begins to wait for its dependencies, then starts."""
        assert not self._started, "a supervisor starts once"
        self._started = True
        for process in self._processes.values():
            process.start()

    async def wait_ready(self, timeout_s: float) -> None:
        """Return once every process is ready; TimeoutError naming the others and why."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            changed = self._readiness_changed.current()
            waiting = [process for process in self._processes.values() if not process.ready]
            if not waiting:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                details = "; ".join(str(process.status) for process in waiting)
                raise TimeoutError(f"not ready within {timeout_s:g}s: {details}")
            await wait_any([changed], remaining)

    async def stop(self) -> None:
        """Stop everything, dependents first, within `stop_timeout_s`; then end the streams."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_timeout_s
        try:
            for wave in reversed(self._waves):
                remaining = max(0.0, deadline - loop.time())
                await asyncio.gather(
                    *(self._processes[name].stop(grace_s=remaining) for name in wave)
                )
        finally:
            for stream in list(self._streams):
                stream.close()

    async def __aenter__(self) -> Supervisor:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def _publish(self, event: ProcessEvent) -> None:
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:  # a subscriber's bug must not stop supervision
                log.exception("event callback %r failed on %s", callback, event.change.value)
        for stream in list(self._streams):
            stream.deliver(event)
