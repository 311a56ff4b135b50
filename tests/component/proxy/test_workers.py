"""`python -m gossamer.proxy.runner --workers 2`: two proxies share the listening port (SO_REUSEPORT),
both serve, and when one is killed the other keeps serving while the parent starts it again."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import msgspec
import pytest

from gossamer.snapshot import dump

from .backend import Backend
from .harness import cluster, snapshot, to


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Poll a condition until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {check.__name__}"
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def ports(ready: Path) -> dict[str, int] | None:
    """The ports a ready file lists, once it is complete (the admin's line is last)."""
    if not ready.exists() or "admin" not in ready.read_text():
        return None
    return {
        name: int(port) for name, port in (line.split() for line in ready.read_text().splitlines())
    }


async def requests_served(admin: int) -> int:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{admin}/stats/prometheus")).text
    return sum(
        int(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("istio_requests_total{")
    )


async def get_once(port: int) -> int:
    """One request on a connection of its own (so the kernel picks a worker for each)."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        return (
            await client.get(f"http://127.0.0.1:{port}/", headers={"connection": "close"})
        ).status_code


@pytest.fixture
async def workers(
    tmp_path: Path, backend: Backend
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path]]:
    config = snapshot([to("one")], [cluster("one", backend.port)])
    listener = msgspec.structs.replace(config.listeners[0], port=free_port())
    bootstrap = tmp_path / "bootstrap.json"
    bootstrap.write_bytes(dump(msgspec.structs.replace(config, listeners=(listener,))))
    ready = tmp_path / "ready"
    with (tmp_path / "stderr").open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gossamer.proxy.runner", "--workers", "2",
            "--bootstrap", str(bootstrap), "--admin", "127.0.0.1:0", "--ready-file", str(ready),
            "--drain-timeout", "1", stderr=stderr,
        )  # fmt: skip
    yield process, ready
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 15.0)
    assert process.returncode == 0


async def test_two_workers_share_the_port_and_one_keeps_serving_when_the_other_dies(
    workers: tuple[asyncio.subprocess.Process, Path],
) -> None:
    parent, ready = workers
    files = (ready, ready.with_name("ready.1"))

    async def both_ready() -> bool:
        assert parent.returncode is None
        return all(ports(f) is not None for f in files)

    await until(both_ready)
    first, second = (ports(f) for f in files)
    assert first is not None and second is not None
    assert first["outbound"] == second["outbound"]
    assert first["admin"] != second["admin"]
    port = first["outbound"]

    async def both_served() -> bool:
        assert await get_once(port) == 200
        return (
            await requests_served(first["admin"]) > 0 and await requests_served(second["admin"]) > 0
        )

    await until(both_served)

    pids = children(parent.pid)
    assert len(pids) == 2
    victim = pids[0]
    os.kill(victim, signal.SIGKILL)

    async def victim_gone() -> bool:
        return victim not in children(parent.pid)

    await until(victim_gone)
    for _ in range(20):
        assert await get_once(port) == 200

    async def started_again() -> bool:
        now = children(parent.pid)
        return len(now) == 2 and victim not in now

    await until(started_again)
    assert parent.returncode is None
