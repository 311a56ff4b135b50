"""The supervisor of `gossamer up` with real processes: order, restarts, logs, stop, readiness."""

from __future__ import annotations

import asyncio
import shlex
import signal
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from gossamer.runtime import (
    BackoffPolicy,
    Change,
    EventStream,
    ExitStatus,
    Phase,
    ProcessEvent,
    ProcessSpec,
    ReadinessProbe,
    RestartPolicy,
    SpecError,
    Supervisor,
)

SLEEPER = "import time; time.sleep(60)"
QUICK = BackoffPolicy(initial_s=0.05, max_s=0.4, reset_after_s=60)


def python(code: str) -> tuple[str, ...]:
    """argv running `code` in a fresh interpreter that starts fast (no site, no user paths)."""
    return (sys.executable, "-I", "-S", "-c", textwrap.dedent(code))


def alive(pid: int) -> bool:
    """Whether `pid` is a process that still runs; a zombie has ended and does not count."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


async def eventually(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Return once `condition()` holds; fail the test if it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what or condition}"
        await asyncio.sleep(0.01)


async def next_event(stream: EventStream, change: Change, timeout: float = 5.0) -> ProcessEvent:
    """The next event of the stream with this change, skipping the others."""

    async def find() -> ProcessEvent:
        async for event in stream:
            if event.change is change:
                return event
        raise AssertionError(f"the stream ended before {change}")

    return await asyncio.wait_for(find(), timeout)


class Recorder:
    """Every event a supervisor publishes, through a callback."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.events: list[ProcessEvent] = []
        supervisor.subscribe(self.events.append)

    def of(self, name: str, change: Change) -> list[ProcessEvent]:
        return [event for event in self.events if event.name == name and event.change is change]

    def order(self) -> list[tuple[str, Change]]:
        return [(event.name, event.change) for event in self.events]


class Checks:
    """A readiness check the test controls, counting how often it was asked."""

    def __init__(self, answer: bool = False) -> None:
        self.answer = answer
        self.count = 0

    async def __call__(self) -> bool:
        self.count += 1
        return self.answer


@pytest.fixture
def spec(tmp_path: Path) -> Callable[..., ProcessSpec]:
    def make(name: str, code: str, **fields: Any) -> ProcessSpec:
        return ProcessSpec(
            name=name, argv=python(code), log_path=tmp_path / f"{name}.log", **fields
        )

    return make


async def test_a_process_starts_only_once_what_it_starts_after_is_ready(
    spec: Callable[..., ProcessSpec],
) -> None:
    sidecar_ready = Checks(answer=False)
    supervisor = Supervisor(
        [
            spec("app", SLEEPER, after=["sidecar"]),
            spec("sidecar", SLEEPER, readiness=ReadinessProbe(sidecar_ready, period_s=0.01)),
        ],
        backoff=QUICK,
    )
    recorder = Recorder(supervisor)
    assert supervisor.waves == (("sidecar",), ("app",))

    async with supervisor:
        await eventually(lambda: sidecar_ready.count >= 5, what="the sidecar is probed")
        app = supervisor.status("app")
        assert (app.phase, app.pid, app.reason) == (
            Phase.PENDING,
            None,
            "waiting for sidecar to be ready",
        )
        assert supervisor.status("sidecar").phase is Phase.RUNNING

        sidecar_ready.answer = True
        await supervisor.wait_ready(5.0)

    order = recorder.order()
    assert order.index(("sidecar", Change.READY)) < order.index(("app", Change.STARTING))
    assert order.index(("app", Change.EXITED)) < order.index(("sidecar", Change.STOPPING))


async def test_a_crashing_process_is_restarted_with_growing_delays(
    spec: Callable[..., ProcessSpec],
) -> None:
    supervisor = Supervisor(
        [spec("crasher", "import sys; sys.exit(3)")],
        backoff=BackoffPolicy(initial_s=0.05, max_s=0.2, reset_after_s=60),
    )
    recorder = Recorder(supervisor)

    async with supervisor:
        await eventually(lambda: supervisor.status("crasher").restarts >= 4, what="4 restarts")

    exits = recorder.of("crasher", Change.EXITED)
    in_backoff = [event.status for event in exits if event.status.phase is Phase.BACKOFF]
    assert [status.backoff_s for status in in_backoff[:4]] == [0.05, 0.1, 0.2, 0.2]
    first = in_backoff[0]
    assert first.last_exit == ExitStatus(code=3)
    assert first.pid is None
    assert first.retry_at is not None
    assert first.retry_at == pytest.approx(exits[0].at + 0.05, abs=0.01)
    assert str(first).startswith("crasher: Backoff, restarts 0, last exit code 3")

    starts = recorder.of("crasher", Change.STARTING)
    assert [event.status.restarts for event in starts[:5]] == [0, 1, 2, 3, 4]
    for exited, delay, restarted in zip(exits, [0.05, 0.1, 0.2, 0.2], starts[1:], strict=False):
        assert restarted.at - exited.at >= delay - 0.005


async def test_the_backoff_resets_after_a_run_long_enough(tmp_path: Path) -> None:
    # A shell starts in a millisecond even on a loaded machine, so the short runs stay short.
    crash_but_the_third_run_lasts = """
        count=$(( $(cat runs 2>/dev/null || echo 0) + 1 ))
        echo "$count" > runs
        [ "$count" -eq 3 ] && sleep 1.2
        exit 1
    """
    flaky = ProcessSpec(
        "flaky",
        ["sh", "-c", textwrap.dedent(crash_but_the_third_run_lasts)],
        tmp_path / "flaky.log",
        cwd=tmp_path,
    )
    supervisor = Supervisor(
        [flaky], backoff=BackoffPolicy(initial_s=0.05, max_s=5.0, reset_after_s=0.9)
    )
    recorder = Recorder(supervisor)

    async with supervisor:
        await eventually(lambda: len(recorder.of("flaky", Change.EXITED)) >= 4, what="4 exits")

    delays = [event.status.backoff_s for event in recorder.of("flaky", Change.EXITED)[:4]]
    assert delays == [0.05, 0.1, 0.05, 0.1]


async def test_each_start_appends_a_header_and_the_output_to_the_log(
    spec: Callable[..., ProcessSpec], tmp_path: Path
) -> None:
    log = tmp_path / "hello.log"
    log.write_text("from an earlier up, no newline")
    greet = """
        import os, sys
        print(os.environ["GREETING"], os.getcwd(), flush=True)
        print("to stderr", file=sys.stderr)
    """
    hello = spec("hello", greet, env={"GREETING": "hello"}, cwd=tmp_path)
    supervisor = Supervisor([hello], backoff=BackoffPolicy(initial_s=0.05, max_s=10.0))
    recorder = Recorder(supervisor)

    async with supervisor:
        await eventually(lambda: len(recorder.of("hello", Change.EXITED)) >= 2, what="2 runs")

    lines = log.read_text().splitlines()
    assert lines[0] == "from an earlier up, no newline"
    for header, attempt in ((lines[1], 1), (lines[4], 2)):
        dashes, stamp, rest = header.split(" ", 2)
        assert dashes == "---"
        assert datetime.fromisoformat(stamp).tzinfo is not None
        assert rest == f"attempt {attempt}: " + shlex.join(hello.argv).replace("\n", "\\n")
    assert lines[2:4] == [f"hello {tmp_path}", "to stderr"]
    assert lines[5:7] == [f"hello {tmp_path}", "to stderr"]


async def test_stop_kills_a_process_that_ignores_sigterm_once_its_grace_is_over(
    spec: Callable[..., ProcessSpec], tmp_path: Path
) -> None:
    stubborn_log = tmp_path / "stubborn.log"

    async def ignoring_sigterm() -> bool:
        return "ignoring SIGTERM" in stubborn_log.read_text().splitlines()  # not the header

    stubborn = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
        time.sleep(60)
    """
    supervisor = Supervisor(
        [
            spec(
                "stubborn",
                stubborn,
                readiness=ReadinessProbe(ignoring_sigterm, period_s=0.01),
                stop_grace_s=0.5,
            ),
            spec("polite", SLEEPER, stop_grace_s=5.0),
        ]
    )
    supervisor.start()
    await supervisor.wait_ready(5.0)
    pids = {status.name: status.pid for status in supervisor.statuses()}

    began = time.monotonic()
    await supervisor.stop()
    took = time.monotonic() - began

    assert 0.5 <= took < 2.0  # stubborn's grace is 0.5 s; polite ends on SIGTERM at once
    stubborn_status, polite_status = supervisor.statuses()
    assert (stubborn_status.phase, stubborn_status.pid) == (Phase.STOPPED, None)
    assert stubborn_status.last_exit == ExitStatus(signal=signal.SIGKILL)
    assert str(stubborn_status.last_exit) == "killed by SIGKILL"
    assert polite_status.last_exit == ExitStatus(signal=signal.SIGTERM)
    assert not any(alive(pid) for pid in pids.values() if pid is not None)


async def test_the_whole_stop_is_bounded_by_the_supervisor(
    spec: Callable[..., ProcessSpec],
) -> None:
    ignore_sigterm = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    )
    supervisor = Supervisor(
        [
            spec("first", ignore_sigterm, stop_grace_s=30.0),
            spec("second", ignore_sigterm, stop_grace_s=30.0, after=["first"]),
        ],
        stop_timeout_s=0.3,
    )
    async with supervisor:
        await supervisor.wait_ready(5.0)
        began = time.monotonic()
    assert time.monotonic() - began < 1.5
    assert [status.phase for status in supervisor.statuses()] == [Phase.STOPPED, Phase.STOPPED]


async def test_stop_leaves_no_grandchild_behind(
    spec: Callable[..., ProcessSpec], tmp_path: Path
) -> None:
    pid_file = tmp_path / "grandchild.pid"
    spawn_a_grandchild = f"""
        import pathlib, subprocess, time
        child = subprocess.Popen(["sleep", "60"])
        pathlib.Path({str(pid_file)!r}).write_text(str(child.pid))
        time.sleep(60)
    """

    async def grandchild_started() -> bool:
        return pid_file.exists()

    parent = spec("parent", spawn_a_grandchild, readiness=ReadinessProbe(grandchild_started, 0.01))
    async with Supervisor([parent]) as supervisor:
        await supervisor.wait_ready(5.0)
        grandchild = int(pid_file.read_text())
        assert alive(grandchild)

    assert not alive(grandchild)


async def test_a_grandchild_that_ignores_sigterm_is_killed_after_the_grace(
    spec: Callable[..., ProcessSpec], tmp_path: Path
) -> None:
    pid_file = tmp_path / "grandchild.pid"
    stubborn_grandchild = f"""
        import os, pathlib, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))
        time.sleep(60)
    """
    spawn_it = f"""
        import subprocess, time
        subprocess.Popen({list(python(stubborn_grandchild))!r})
        time.sleep(60)
    """

    async def grandchild_started() -> bool:
        return pid_file.exists() and pid_file.read_text() != ""

    parent = spec(
        "parent",
        spawn_it,
        readiness=ReadinessProbe(grandchild_started, 0.01),
        stop_grace_s=0.3,
    )
    supervisor = Supervisor([parent])
    async with supervisor:
        await supervisor.wait_ready(5.0)
        grandchild = int(pid_file.read_text())
        began = time.monotonic()

    # The parent ends on SIGTERM at once; the group still holds the grandchild until SIGKILL.
    assert time.monotonic() - began >= 0.3
    assert not alive(grandchild)
    assert supervisor.status("parent").last_exit == ExitStatus(signal=signal.SIGTERM)


async def test_the_group_of_a_process_that_exits_is_killed_with_it(
    spec: Callable[..., ProcessSpec], tmp_path: Path
) -> None:
    pid_file = tmp_path / "grandchild.pid"
    spawn_then_crash = f"""
        import pathlib, subprocess, sys
        child = subprocess.Popen(["sleep", "60"])
        pathlib.Path({str(pid_file)!r}).write_text(str(child.pid))
        sys.exit(4)
    """
    crasher = spec("crasher", spawn_then_crash, restart=RestartPolicy.NEVER)
    async with Supervisor([crasher]) as supervisor:
        await eventually(lambda: supervisor.status("crasher").phase is Phase.FAILED)
        grandchild = int(pid_file.read_text())
        await eventually(lambda: not alive(grandchild), timeout=2.0, what="the grandchild ended")
    assert supervisor.status("crasher").last_exit == ExitStatus(code=4)


async def test_readiness_flips_are_published_as_events(spec: Callable[..., ProcessSpec]) -> None:
    check = Checks(answer=True)
    probe = ReadinessProbe(check, period_s=0.01, failure_threshold=2)
    supervisor = Supervisor([spec("svc", SLEEPER, readiness=probe)])

    with supervisor.events() as stream:
        async with supervisor:
            ready = await next_event(stream, Change.READY)
            assert (ready.status.phase, ready.status.ready) == (Phase.RUNNING, True)

            check.answer = False
            not_ready = await next_event(stream, Change.NOT_READY)
            assert not_ready.status.ready is False
            assert not_ready.status.reason == "readiness check returned false"
            assert not_ready.status.pid == ready.status.pid

            check.answer = True
            await next_event(stream, Change.READY)

        rest = [event async for event in stream]  # the stream ends once the supervisor stopped
    assert [event.change for event in rest] == [Change.NOT_READY, Change.STOPPING, Change.EXITED]
    assert rest[0].status.reason == "stopping"
    assert rest[-1].status.phase is Phase.STOPPED
    assert stream.dropped == 0


async def test_a_process_never_ready_holds_its_dependents_back_and_says_why(
    spec: Callable[..., ProcessSpec],
) -> None:
    async def broken() -> bool:
        raise RuntimeError("admin port closed")

    async def slow() -> bool:
        await asyncio.sleep(10)
        return True

    supervisor = Supervisor(
        [
            spec("broken", SLEEPER, readiness=ReadinessProbe(broken, period_s=0.01)),
            spec("slow", SLEEPER, readiness=ReadinessProbe(slow, period_s=0.01, timeout_s=0.05)),
            spec("app", SLEEPER, after=["broken", "slow"]),
        ]
    )
    recorder = Recorder(supervisor)
    async with supervisor:
        await eventually(lambda: "timed out" in supervisor.status("slow").reason)
        await eventually(lambda: "raised" in supervisor.status("broken").reason)
        with pytest.raises(TimeoutError) as not_ready:
            await supervisor.wait_ready(0.2)

        broken_status, slow_status, app = supervisor.statuses()
        assert (broken_status.phase, broken_status.ready) == (Phase.RUNNING, False)
        assert broken_status.reason == "readiness check raised RuntimeError: admin port closed"
        assert slow_status.reason == "readiness check timed out after 0.05s"
        assert (app.phase, app.pid) == (Phase.PENDING, None)
        assert app.reason == "waiting for broken, slow to be ready"
        assert "app: Pending, restarts 0, waiting for broken, slow to be ready" in str(
            not_ready.value
        )

    assert recorder.of("app", Change.STARTING) == []
    assert supervisor.status("app").phase is Phase.STOPPED


async def test_restart_policies_decide_what_follows_an_exit(
    spec: Callable[..., ProcessSpec], tmp_path: Path
) -> None:
    supervisor = Supervisor(
        [
            spec("done", "pass", restart=RestartPolicy.ON_FAILURE),
            spec("broken", "import sys; sys.exit(2)", restart=RestartPolicy.NEVER),
            ProcessSpec(
                "missing",
                [str(tmp_path / "no-such-program")],
                tmp_path / "missing.log",
                restart=RestartPolicy.NEVER,
            ),
        ],
        backoff=QUICK,
    )
    finished = {Phase.STOPPED, Phase.FAILED}
    async with supervisor:
        await eventually(lambda: {s.phase for s in supervisor.statuses()} <= finished)
        done, broken, missing = supervisor.statuses()

    assert (done.phase, done.last_exit, done.restarts) == (Phase.STOPPED, ExitStatus(code=0), 0)
    assert (broken.phase, broken.last_exit) == (Phase.FAILED, ExitStatus(code=2))
    assert (missing.phase, missing.last_exit) == (Phase.FAILED, None)
    assert missing.reason.startswith("could not start: [Errno 2]")
    assert "could not start: [Errno 2]" in (tmp_path / "missing.log").read_text()


async def test_cancelling_the_block_stops_every_process(spec: Callable[..., ProcessSpec]) -> None:
    running = asyncio.Event()
    pids: list[int] = []

    async def up() -> None:
        async with Supervisor([spec("a", SLEEPER), spec("b", SLEEPER, after=["a"])]) as supervisor:
            await supervisor.wait_ready(5.0)
            pids.extend(status.pid for status in supervisor.statuses() if status.pid)
            running.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(up())
    await asyncio.wait_for(running.wait(), 5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(pids) == 2
    assert not any(alive(pid) for pid in pids)


def test_specs_that_cannot_run_are_refused_before_anything_starts(tmp_path: Path) -> None:
    def make(name: str, *after: str) -> ProcessSpec:
        return ProcessSpec(name, ["true"], tmp_path / f"{name}.log", after=after)

    with pytest.raises(SpecError, match="duplicate process names: a"):
        Supervisor([make("a"), make("a")])
    with pytest.raises(SpecError, match="b: starts after unknown processes: c"):
        Supervisor([make("a"), make("b", "c")])
    with pytest.raises(SpecError, match="dependency cycle: these can never start: a, b, c"):
        Supervisor([make("a", "b"), make("b", "a"), make("c", "a")])
    with pytest.raises(SpecError, match="a: cannot start after itself"):
        make("a", "a")
