"""What a supervised process is doing: status snapshots, the changes between them, and a stream."""

from __future__ import annotations

import asyncio
import enum
import signal
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


class Phase(enum.Enum):
    """Where a process is in its life."""

    PENDING = "Pending"  # waiting for the processes it starts after to be ready
    STARTING = "Starting"  # being spawned
    RUNNING = "Running"  # alive, ready or not
    BACKOFF = "Backoff"  # exited, restarting after a delay (Kubernetes' CrashLoopBackOff)
    STOPPED = "Stopped"  # stopped by the supervisor, or exited and not to be restarted
    FAILED = "Failed"  # exited with a failure and not to be restarted


class Change(enum.Enum):
    """What just happened to a process; one event per change."""

    WAITING = "waiting"  # pending, the reason changed (which dependency it waits for)
    STARTING = "starting"
    STARTED = "started"
    READY = "ready"
    NOT_READY = "not ready"
    EXITED = "exited"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a run ended: an exit code, or the signal that ended it."""

    code: int | None = None
    signal: int | None = None

    @classmethod
    def from_returncode(cls, returncode: int) -> ExitStatus:
        """asyncio's convention: a negative return code is the signal that ended the process."""
        if returncode < 0:
            return cls(signal=-returncode)
        return cls(code=returncode)

    @property
    def succeeded(self) -> bool:
        """Exited by itself with code 0."""
        return self.code == 0

    def __str__(self) -> str:
        if self.signal is not None:
            try:
                return f"killed by {signal.Signals(self.signal).name}"
            except ValueError:
                return f"killed by signal {self.signal}"
        return f"exit code {self.code}"


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    """A snapshot of one process. Times are wall clock (time.time()) so a person can read them.

    `reason` says why the process is where it is (the dependency it waits for, the last
    readiness failure, why it could not start), empty when there is nothing to say.
    `retry_at` and `backoff_s` are set in Backoff.
    """

    name: str
    phase: Phase = Phase.PENDING
    ready: bool = False
    pid: int | None = None
    restarts: int = 0
    last_exit: ExitStatus | None = None
    reason: str = ""
    started_at: float | None = None
    retry_at: float | None = None
    backoff_s: float | None = None

    def __str__(self) -> str:
        readiness = " ready" if self.ready else ""
        parts = [f"{self.name}: {self.phase.value}{readiness}", f"restarts {self.restarts}"]
        if self.pid is not None:
            parts.append(f"pid {self.pid}")
        if self.last_exit is not None:
            parts.append(f"last {self.last_exit}")
        if self.reason:
            parts.append(self.reason)
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class ProcessEvent:
    """A change and the status it left the process in."""

    change: Change
    status: ProcessStatus
    at: float

    @property
    def name(self) -> str:
        """The process it happened to."""
        return self.status.name


class EventStream:
    """One subscriber's events, oldest first, ending when the supervisor has stopped.

    The buffer holds at most `limit` events; when full, the oldest is dropped and counted in
    `dropped`. Every event carries a whole status, so a slow reader loses steps, not the state
    it ends in. Use as `with supervisor.events() as events: async for event in events: ...`.
    """

    def __init__(self, limit: int, on_close: Callable[[EventStream], None]) -> None:
        assert limit > 0
        self.limit = limit
        self.dropped = 0
        self._events: deque[ProcessEvent] = deque()
        self._arrived = asyncio.Event()
        self._closed = False
        self._on_close = on_close

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<EventStream {state}: {len(self._events)} queued, {self.dropped} dropped>"

    def deliver(self, event: ProcessEvent) -> None:
        """Queue an event (the supervisor calls this)."""
        if self._closed:
            return
        if len(self._events) >= self.limit:
            self._events.popleft()
            self.dropped += 1
        self._events.append(event)
        self._arrived.set()

    def close(self) -> None:
        """Stop receiving; the events already queued can still be read."""
        if not self._closed:
            self._closed = True
            self._arrived.set()
            self._on_close(self)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ProcessEvent:
        while not self._events:
            if self._closed:
                raise StopAsyncIteration
            self._arrived.clear()
            await self._arrived.wait()
        return self._events.popleft()
