"""Fixtures: real backends on real sockets, and proxies started in-process before them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from gossamer.snapshot import Snapshot

from .backend import Backend
from .harness import Running, start_proxy


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    server = await Backend("one").start()
    yield server
    await server.stop()


@pytest.fixture
async def backend2() -> AsyncIterator[Backend]:
    server = await Backend("two").start()
    yield server
    await server.stop()


@pytest.fixture
async def run_proxy() -> AsyncIterator[Callable[[Snapshot], Awaitable[Running]]]:
    started: list[Running] = []

    async def run(config: Snapshot) -> Running:
        running = await start_proxy(config)
        started.append(running)
        return running

    yield run
    for running in started:
        await running.admin.close()
        await running.proxy.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as http:
        yield http
