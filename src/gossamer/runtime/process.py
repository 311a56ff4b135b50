"""One supervised process: wait for its dependencies, run it, probe it, restart it, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, BinaryIO

from gossamer.runtime.backoff import BackoffPolicy, CrashLoopBackoff
from gossamer.runtime.groups import group_alive, kill_group, signal_group
from gossamer.runtime.ports import ports_held_by_others
from gossamer.runtime.spec import ProcessSpec, ReadinessProbe
from gossamer.runtime.status import Change, ExitStatus, Phase, ProcessEvent, ProcessStatus

log = logging.getLogger(__name__)

KILL_WAIT_S = 2.0
"""After SIGKILL, how long to wait for the kernel to end the process before giving up on it."""

GROUP_POLL_S = 0.02
"""How often a stopping process group is checked for members still alive."""

Publish = Callable[[ProcessEvent], None]


class ReadinessSignal:
    """Wakes everyone waiting on readiness whenever any process becomes ready or not ready.

    `current()` is taken before checking, so a change between the check and the wait still
    wakes the waiter.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        """The event the next change sets."""
        return self._event

    def fire(self) -> None:
        """Wake the current waiters; later waiters wait for the next change."""
        self._event.set()
        self._event = asyncio.Event()


async def wait_any(events: Iterable[asyncio.Event], timeout_s: float | None = None) -> None:
    """Return when one of `events` is set, or after `timeout_s`."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class SupervisedProcess:
    """The lifecycle of one spec, run by one task; `status` is its latest snapshot."""

    def __init__(
        self,
        spec: ProcessSpec,
        backoff: BackoffPolicy,
        dependencies: Sequence[SupervisedProcess],
        readiness_changed: ReadinessSignal,
        publish: Publish,
    ) -> None:
        self.spec = spec
        self.status = ProcessStatus(spec.name)
        self._backoff = CrashLoopBackoff(backoff)
        self._dependencies = tuple(dependencies)
        self._readiness_changed = readiness_changed
        self._publish = publish
        self._attempts = 0
        self._stopping = asyncio.Event()
        self._grace_s = spec.stop_grace_s
        self._task: asyncio.Task[None] | None = None
        self._pgid: int | None = None

    def __repr__(self) -> str:
        return f"<SupervisedProcess {self.status}>"

    @property
    def ready(self) -> bool:
        """Whether it runs and its readiness check passes."""
        return self.status.ready

    def start(self) -> None:
        """Begin the lifecycle: it waits for the dependencies, then starts the process."""
        assert self._task is None, f"{self.spec.name} started twice"
        self._task = asyncio.create_task(self._live(), name=f"supervise {self.spec.name}")
        self._task.add_done_callback(self._lifecycle_ended)

    async def stop(self, grace_s: float) -> None:
        """SIGTERM the process group, allow it min(`grace_s`, the spec's grace), then SIGKILL.

        Returns once the process and its group are gone (or, should the lifecycle hang, after a
        bound: its task is then cancelled, which kills the group at once).
        """
        self._grace_s = max(0.0, min(grace_s, self.spec.stop_grace_s))
        self._stopping.set()
        task = self._task
        if task is None:
            if self.status.phase is Phase.PENDING:
                self._emit(Change.STOPPED, phase=Phase.STOPPED, reason="")
            return
        done, _ = await asyncio.wait({task}, timeout=self._grace_s + KILL_WAIT_S + 1.0)
        if not done:
            log.warning("%s: lifecycle did not end in time; killing its group", self.spec.name)
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)

    async def _live(self) -> None:
        try:
            while await self._dependencies_ready():
                ran_for_s = await self._run_once()
                if not self._after_exit(ran_for_s):
                    return
                await wait_any([self._stopping], self.status.backoff_s)
            self._emit(Change.STOPPED, phase=Phase.STOPPED, ready=False, reason="")
        finally:
            if self._pgid is not None:  # cancelled while running: no time left to be polite
                kill_group(self._pgid)

    def _lifecycle_ended(self, task: asyncio.Task[None]) -> None:
        """Make an abnormal end of the lifecycle visible in the status."""
        if task.cancelled():
            if self.status.phase not in (Phase.STOPPED, Phase.FAILED):
                self._emit(
                    Change.STOPPED,
                    phase=Phase.STOPPED,
                    ready=False,
                    pid=None,
                    reason="supervision cancelled",
                )
            return
        error = task.exception()
        if error is not None:
            log.error("%s: supervision failed", self.spec.name, exc_info=error)
            self._emit(
                Change.EXITED,
                phase=Phase.FAILED,
                ready=False,
                pid=None,
                reason=f"supervision failed: {error!r}",
            )

    async def _dependencies_ready(self) -> bool:
        """Wait until every dependency is ready; False when stopped first."""
        while not self._stopping.is_set():
            changed = self._readiness_changed.current()
            waiting = [dep.spec.name for dep in self._dependencies if not dep.ready]
            if not waiting:
                return True
            reason = f"waiting for {', '.join(waiting)} to be ready"
            if self.status.phase is not Phase.PENDING or self.status.reason != reason:
                self._emit(Change.WAITING, phase=Phase.PENDING, reason=reason)
            await wait_any([self._stopping, changed])
        return False

    async def _run_once(self) -> float:
        """Start the process and wait for it to exit (stopping it if asked); how long it ran."""
        self._attempts += 1
        self._emit(Change.STARTING, phase=Phase.STARTING, restarts=self._attempts - 1, reason="")
        try:
            process = await self._spawn()
        except (OSError, ValueError) as error:
            self._set(last_exit=None, reason=f"could not start: {error}")
            return 0.0
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._pgid = process.pid
        probe = self.spec.readiness
        self._emit(
            Change.STARTED,
            phase=Phase.RUNNING,
            pid=process.pid,
            started_at=time.time(),
            reason="readiness not checked yet" if probe else "",
        )
        if probe is None:
            self._emit(Change.READY, ready=True)
        await self._supervise(process, probe)
        if self.status.ready:
            self._emit(Change.NOT_READY, ready=False, reason="exited")
        kill_group(process.pid)  # the group ends with its leader, as a container does
        self._pgid = None
        if process.returncode is None:
            self._set(pid=None, last_exit=None, reason="still running after SIGKILL")
        else:
            # A server that exits because another process holds its port is told apart.
            exit_status = ExitStatus.from_returncode(process.returncode)
            held = "" if exit_status.succeeded else ports_held_by_others(self.spec.ports, 0)
            self._set(pid=None, last_exit=exit_status, reason=held)
        return loop.time() - started

    async def _spawn(self) -> asyncio.subprocess.Process:
        spec = self.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with spec.log_path.open("a+b") as log_file:
            log_file.write(_header(log_file, spec.argv, self._attempts))
            log_file.flush()
            try:
                return await asyncio.create_subprocess_exec(
                    *spec.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file.fileno(),
                    stderr=subprocess.STDOUT,
                    cwd=spec.cwd,
                    env={**os.environ, **spec.env},
                    start_new_session=True,
                )
            except (OSError, ValueError) as error:
                log_file.write(f"could not start: {error}\n".encode())
                raise

    async def _supervise(
        self, process: asyncio.subprocess.Process, probe: ReadinessProbe | None
    ) -> None:
        """Probe readiness until the process exits; terminate it if a stop comes first."""
        exited = asyncio.ensure_future(process.wait())
        stop = asyncio.ensure_future(self._stopping.wait())
        probing = (
            asyncio.create_task(self._probe(probe, process.pid)) if probe is not None else None
        )
        try:
            await asyncio.wait({exited, stop}, return_when=asyncio.FIRST_COMPLETED)
            if probing is not None:
                probing.cancel()
            if not exited.done():
                await self._terminate(process.pid, exited)
        finally:
            stop.cancel()
            exited.cancel()
            if probing is not None:
                probing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probing

    async def _terminate(self, pgid: int, exited: asyncio.Future[int]) -> None:
        """SIGTERM the group, wait the grace period for all of it to end, then SIGKILL it."""
        if self.status.ready:
            self._emit(Change.NOT_READY, ready=False, reason="stopping")
        self._emit(Change.STOPPING, reason="stopping")
        signal_group(pgid, signal.SIGTERM)
        if not await _ended(pgid, exited, self._grace_s):
            kill_group(pgid)
            await _ended(pgid, exited, KILL_WAIT_S)

    async def _probe(self, probe: ReadinessProbe, pgid: int) -> None:
        """Poll the readiness check while the process runs; emit READY and NOT_READY flips."""
        failures = 0
        while True:
            # Who holds the ports is asked until ready (the tables grow with connections);
            # once this process holds them, no other can take them.
            held = "" if self.status.ready else ports_held_by_others(self.spec.ports, pgid)
            passed, reason = (False, held) if held else await check_readiness(probe)
            if passed:
                failures = 0
                if not self.status.ready:
                    self._emit(Change.READY, ready=True, reason="")
            else:
                failures += 1
                if not self.status.ready:
                    self._set(reason=reason)
                elif failures >= probe.failure_threshold:
                    self._emit(Change.NOT_READY, ready=False, reason=reason)
            await asyncio.sleep(probe.period_s)

    def _after_exit(self, ran_for_s: float) -> bool:
        """Decide what follows a run: True to restart after `status.backoff_s`."""
        exit_status = self.status.last_exit
        succeeded = exit_status is not None and exit_status.succeeded
        if self._stopping.is_set():
            self._emit(Change.EXITED, phase=Phase.STOPPED)
            return False
        limit = self.spec.restart_limit
        if not self.spec.restart.restarts(succeeded) or (
            limit is not None and self._attempts > limit
        ):
            self._emit(Change.EXITED, phase=Phase.STOPPED if succeeded else Phase.FAILED)
            return False
        delay = self._backoff.delay_after(ran_for_s)
        self._emit(
            Change.EXITED, phase=Phase.BACKOFF, retry_at=time.time() + delay, backoff_s=delay
        )
        return True

    def _set(self, **changes: Any) -> None:
        was_ready = self.status.ready
        if changes.get("phase", Phase.BACKOFF) is not Phase.BACKOFF:
            changes.update(retry_at=None, backoff_s=None)
        self.status = dataclasses.replace(self.status, **changes)
        if self.status.ready != was_ready:
            self._readiness_changed.fire()

    def _emit(self, change: Change, **changes: Any) -> None:
        self._set(**changes)
        self._publish(ProcessEvent(change, self.status, time.time()))


async def check_readiness(probe: ReadinessProbe) -> tuple[bool, str]:
    """Run the check once: whether it passed, and if not, why (a person reads it in status)."""
    try:
        async with asyncio.timeout(probe.timeout_s):
            passed = await probe.check()
    except TimeoutError:
        return False, f"readiness check timed out after {probe.timeout_s:g}s"
    except Exception as error:  # a broken check means "not ready", never a dead supervisor
        log.debug("readiness check failed", exc_info=True)
        return False, f"readiness check raised {type(error).__name__}: {error}"
    if not passed:
        return False, "readiness check returned false"
    return True, ""


async def _ended(pgid: int, exited: asyncio.Future[int], timeout_s: float) -> bool:
    """Wait until the group's leader is reaped and no live process is left in the group."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    await asyncio.wait({exited}, timeout=timeout_s)
    while not exited.done() or group_alive(pgid):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(GROUP_POLL_S)
    return True


def _header(log_file: BinaryIO, argv: Sequence[str], attempt: int) -> bytes:
    """The line that opens a run in the log, on a line of its own (argv's newlines as \\n)."""
    end = log_file.seek(0, os.SEEK_END)
    newline = b""
    if end:
        log_file.seek(end - 1)
        newline = b"" if log_file.read(1) == b"\n" else b"\n"
    when = datetime.now().astimezone().isoformat(timespec="milliseconds")
    command = shlex.join(argv).replace("\n", "\\n")
    return newline + f"--- {when} attempt {attempt}: {command}\n".encode()
