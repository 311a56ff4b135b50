"""Mirroring over real sockets: copies reach the shadow, and nothing the shadow does reaches the
client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from gossamer.snapshot import ListenerLimits, Mirror, Snapshot

from .backend import Backend
from .harness import Running, cluster, exchange, snapshot, to
from .waiting import eventually

Run = Callable[[Snapshot], Awaitable[Running]]


def counted(proxy: Running) -> str:
    """The proxy's metrics, as /stats/prometheus shows them."""
    return proxy.proxy.stats.prometheus()


def shadow_idle(proxy: Running) -> bool:
    return proxy.proxy.clusters["shadow"].counters.active_requests == 0


def mirrored(main: Backend, shadow_port: int, percent: float = 100.0, **route: object) -> Snapshot:
    return snapshot(
        [to("main", mirrors=(Mirror(cluster="shadow", percent=percent),), **route)],
        [cluster("main", main.port), cluster("shadow", shadow_port)],
        limits=ListenerLimits(max_request_body_buffer=4096),
    )


@pytest.fixture
async def silent() -> AsyncIterator[int]:
    """A server that accepts connections and reads requests but never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    for writer in held:
        writer.close()


async def test_a_copy_reaches_the_shadow_with_a_shadow_host_and_the_same_body(
    backend: Backend, backend2: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(mirrored(backend, backend2.port))
    async with httpx.AsyncClient() as client:
        got = await client.post(
            f"{proxy.url}/orders?id=7", content=b"payload", headers={"x-a": "1"}
        )
    assert got.status_code == 200 and got.headers["x-backend"] == "one"
    await eventually(lambda: len(backend2.requests) == 1)
    copy, original = backend2.requests[0], backend.requests[0]
    assert (copy.method, copy.target, copy.body) == ("POST", "/orders?id=7", b"payload")
    assert copy.header("host") == f"127.0.0.1-shadow:{proxy.port}"
    assert original.header("host") == f"127.0.0.1:{proxy.port}"
    assert copy.header("x-a") == "1"
    assert copy.header("x-request-id") == original.header("x-request-id")
    await eventually(lambda: 'result="answered"} 1' in counted(proxy))


async def test_a_chunked_body_and_its_trailers_are_copied(
    backend: Backend, backend2: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(mirrored(backend, backend2.port))
    raw = await exchange(
        proxy.port,
        b"POST /up HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
        b"\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 1\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 200 ")
    await eventually(lambda: len(backend2.requests) == 1)
    assert backend2.requests[0].body == b"hello world"
    assert backend2.requests[0].header("host") == "svc-shadow"


async def test_a_pipelined_request_is_copied_once(
    backend: Backend, backend2: Backend, run_proxy: Run
) -> None:
    # The second request is complete before it starts: the copy leaves as it is routed.
    proxy = await run_proxy(mirrored(backend, backend2.port))
    await exchange(
        proxy.port,
        b"GET /first HTTP/1.1\r\nHost: a\r\nx-delay: 0.1\r\n\r\n"
        b"POST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    )
    await eventually(lambda: len(backend2.requests) == 2)
    assert sorted((r.target, r.body) for r in backend2.requests) == [
        ("/first", b""),
        ("/second", b"abc"),
    ]


async def test_shadow_failures_never_reach_the_client(
    backend: Backend, backend2: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(mirrored(backend, backend2.port))
    backend2.fail_next = [500] * 5
    async with httpx.AsyncClient() as client:
        statuses = [(await client.get(proxy.url)).status_code for _ in range(5)]
    assert statuses == [200] * 5
    await eventually(lambda: len(backend2.requests) == 5)
    await backend2.stop()
    async with httpx.AsyncClient() as client:
        statuses = [(await client.get(proxy.url)).status_code for _ in range(5)]
    assert statuses == [200] * 5
    await eventually(lambda: 'result="connect_failed"} 5' in counted(proxy))


async def test_a_shadow_that_never_answers_does_not_slow_the_client(
    backend: Backend, silent: int, run_proxy: Run
) -> None:
    proxy = await run_proxy(mirrored(backend, silent, timeout=0.3))
    async with httpx.AsyncClient() as client:
        started = time.monotonic()
        for _ in range(3):
            assert (await client.get(proxy.url)).status_code == 200
        assert time.monotonic() - started < 0.3
    await eventually(lambda: 'result="timeout"} 3' in counted(proxy))
    assert shadow_idle(proxy)


async def test_a_body_beyond_the_buffer_bound_is_not_mirrored(
    backend: Backend, backend2: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(mirrored(backend, backend2.port))
    async with httpx.AsyncClient() as client:
        big = await client.post(proxy.url, content=b"x" * 10_000)
        small = await client.post(proxy.url, content=b"y" * 100)
    assert big.status_code == small.status_code == 200
    assert len(backend.requests[0].body) == 10_000
    await eventually(lambda: len(backend2.requests) == 1)
    assert backend2.requests[0].body == b"y" * 100
    assert 'cluster="shadow",result="body_too_large"} 1' in counted(proxy)


async def test_the_percentage_chooses_how_many_requests_are_copied(
    backend: Backend, backend2: Backend, run_proxy: Run
) -> None:
    none = await run_proxy(mirrored(backend, backend2.port, percent=0))
    half = await run_proxy(mirrored(backend, backend2.port, percent=50))
    async with httpx.AsyncClient() as client:
        for _ in range(20):
            await client.get(none.url)
        assert backend2.requests == []
        for _ in range(200):
            await client.get(half.url)
    await eventually(lambda: shadow_idle(half))
    assert 60 < len(backend2.requests) < 140
