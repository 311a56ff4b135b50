"""`python -m gossamer.proxy.runner` as a real process: reloads on SIGHUP or a changed file,
keeps the last good snapshot when the new one is broken, and drains on SIGTERM.

Each test runs twice: with the hot path as `make` built it (compiled where a C compiler is), and
as the pure Python a machine without a compiler runs."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from gossamer.proxy import native
from gossamer.snapshot import Snapshot, dump

from .backend import Backend
from .harness import cluster, snapshot, to


class RunnerProcess:
    """A proxy process, the ports its ready file names, and its bootstrap file."""

    def __init__(self, process: asyncio.subprocess.Process, bootstrap: Path, ports: dict[str, int]):
        self.process = process
        self.bootstrap = bootstrap
        self.port = ports["outbound"]
        self.admin = ports["admin"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write(self, config: Snapshot | bytes) -> None:
        """Replace the bootstrap file at once, as a config management tool would."""
        staged = self.bootstrap.with_suffix(".staged")
        staged.write_bytes(config if isinstance(config, bytes) else dump(config))
        staged.replace(self.bootstrap)

    async def admin_get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient() as client:
            return await client.get(f"http://127.0.0.1:{self.admin}{path}")

    async def exited(self, timeout: float) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout)


Start = Callable[[Snapshot, float], Awaitable[RunnerProcess]]


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll a condition that asks the proxy process (over HTTP) until it holds or a deadline."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {check.__name__}"
        await asyncio.sleep(0.02)


@pytest.fixture(params=["as-built", "pure"])
async def start_runner(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Start]:
    started: list[asyncio.subprocess.Process] = []
    env = dict(os.environ)
    env.pop(native.PURE_ENV, None)
    if request.param == "pure":
        env[native.PURE_ENV] = "1"

    async def start(config: Snapshot, drain_timeout: float) -> RunnerProcess:
        bootstrap = tmp_path / "bootstrap.json"
        bootstrap.write_bytes(dump(config))
        ready = tmp_path / "ready"
        with (tmp_path / "stderr").open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gossamer.proxy.runner",
                "--bootstrap", str(bootstrap), "--admin", "127.0.0.1:0",
                "--ready-file", str(ready), "--drain-timeout", str(drain_timeout),
                stderr=stderr, env=env,
            )  # fmt: skip
        started.append(process)

        async def is_ready() -> bool:
            assert process.returncode is None, (tmp_path / "stderr").read_text()
            return ready.exists() and "admin" in ready.read_text()

        await until(is_ready, timeout=15.0)
        ports = dict(line.split() for line in ready.read_text().splitlines())
        runner = RunnerProcess(process, bootstrap, {k: int(v) for k, v in ports.items()})
        # The proxy says which hot path it runs, and it is the one asked for.
        hot_path = (await runner.admin_get("/config_dump")).json()["hot_path"]
        assert hot_path == ("pure" if request.param == "pure" else native.state())
        return runner

    yield start
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_broken_snapshot_is_rejected_and_a_good_one_applied(
    backend: Backend, backend2: Backend, start_runner: Start
) -> None:
    runner = await start_runner(snapshot([to("one")], [cluster("one", backend.port)]), 5.0)
    async with httpx.AsyncClient() as client:
        assert (await client.get(runner.url)).headers["x-backend"] == "one"

        runner.write(b'{"version": "2", "listeners": [')
        runner.process.send_signal(signal.SIGHUP)

        async def rejected() -> bool:
            metrics = (await runner.admin_get("/stats/prometheus")).text
            return "gossamer_snapshot_rejected_total " in metrics

        await until(rejected)
        assert (await client.get(runner.url)).headers["x-backend"] == "one"
        assert (await runner.admin_get("/config_dump")).json()["version"] == "1"

        # No signal this time: the changed file is noticed.
        runner.write(snapshot([to("two")], [cluster("two", backend2.port)], version="2"))

        async def applied() -> bool:
            return (await runner.admin_get("/config_dump")).json()["version"] == "2"

        await until(applied)
        assert (await client.get(runner.url)).headers["x-backend"] == "two"
    assert runner.process.returncode is None


async def test_sigterm_finishes_the_request_in_flight_refuses_new_ones_and_exits_0(
    backend: Backend, start_runner: Start
) -> None:
    runner = await start_runner(snapshot([to("one")], [cluster("one", backend.port)]), 5.0)
    async with httpx.AsyncClient(timeout=5.0) as client:
        in_flight = asyncio.create_task(client.get(runner.url, headers={"x-delay": "0.5"}))

        async def upstream_has_it() -> bool:
            return len(backend.requests) == 1

        await until(upstream_has_it)
        signalled = time.monotonic()
        runner.process.send_signal(signal.SIGTERM)

        async def refused() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", runner.port)
            except ConnectionRefusedError:
                return True
            writer.close()
            return False

        await until(refused)
        response = await in_flight
    assert response.status_code == 200
    assert response.headers["connection"] == "close"
    assert await runner.exited(timeout=5.0) == 0
    # Done when the last request was, not at the drain bound.
    assert time.monotonic() - signalled < 3.0


async def test_a_request_outlasting_the_drain_bound_does_not_hold_the_exit(
    backend: Backend, start_runner: Start
) -> None:
    runner = await start_runner(snapshot([to("one")], [cluster("one", backend.port)]), 1.0)
    async with httpx.AsyncClient(timeout=10.0) as client:
        stuck = asyncio.create_task(client.get(runner.url, headers={"x-delay": "10"}))

        async def upstream_has_it() -> bool:
            return len(backend.requests) == 1

        await until(upstream_has_it)
        signalled = time.monotonic()
        os.kill(runner.process.pid, signal.SIGTERM)
        assert await runner.exited(timeout=4.0) == 0
        assert 0.9 < time.monotonic() - signalled < 3.0
        with pytest.raises(httpx.HTTPError):
            await stuck


async def test_the_process_stays_clear_of_libraries_it_does_not_need(
    backend: Backend, start_runner: Start
) -> None:
    # Each costs every sidecar memory for nothing: OpenSSL's digests (_hashlib, 1.9 MB), the
    # idna codec's tables (unicodedata, 0.45 MB; uvloop's create_server would load them), the
    # json module (0.3 MB; msgspec is already there).
    runner = await start_runner(snapshot([to("one")], [cluster("one", backend.port)]), 5.0)
    async with httpx.AsyncClient() as client:
        assert (await client.get(runner.url)).headers["x-backend"] == "one"
        assert (await runner.admin_get("/clusters")).status_code == 200
    maps = Path(f"/proc/{runner.process.pid}/maps").read_text()
    mapped = {Path(line.split()[-1]).name.split(".")[0] for line in maps.splitlines()}
    assert mapped & {"_hashlib", "unicodedata", "_json"} == set()
    assert "parser" in mapped  # httptools: the check reads the right process
