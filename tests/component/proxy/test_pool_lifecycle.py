"""Upstream connections over real sockets: queued requests are never stranded, and connections
a new snapshot has no use for are closed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from gossamer.snapshot import PoolLimits, Snapshot

from .backend import Backend
from .harness import Running, cluster, snapshot, to
from .waiting import eventually

Run = Callable[[Snapshot], Awaitable[Running]]


async def open_upstream_connections(backend: Backend, count: int) -> None:
    """Wait until the backend has exactly `count` connections open."""
    await eventually(lambda: len(backend.writers) == count, what=f"{count} upstream connections")


async def test_requests_queued_at_max_connections_survive_connections_that_close(
    backend: Backend, run_proxy: Run
) -> None:
    # Every connection closes after one request: the queued ones need new connections, not a
    # release that never comes.
    limits = PoolLimits(max_connections=1, max_requests_per_connection=1)
    proxy = await run_proxy(
        snapshot([to("one", timeout=3.0)], [cluster("one", backend.port, limits=limits)])
    )
    async with httpx.AsyncClient() as client:
        responses = await asyncio.gather(*(client.get(proxy.url) for _ in range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    assert backend.connections == 4


async def test_a_snapshot_closes_idle_connections_it_has_no_use_for(
    backend: Backend, backend2: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    async with httpx.AsyncClient() as client:
        slow = {"x-delay": "0.1"}
        await asyncio.gather(*(client.get(proxy.url, headers=slow) for _ in range(5)))
    await open_upstream_connections(backend, 5)
    # The cluster stays, with another endpoint in place of the first.
    await proxy.proxy.apply(snapshot([to("one")], [cluster("one", backend2.port)], version="2"))
    await open_upstream_connections(backend, 0)
    async with httpx.AsyncClient() as client:
        assert (await client.get(proxy.url)).headers["x-backend"] == "two"
    # The cluster goes.
    await proxy.proxy.apply(snapshot([to("two")], [cluster("two", backend.port)], version="3"))
    await open_upstream_connections(backend2, 0)
    assert proxy.proxy.clusters["two"].counters.connections == 0


async def test_a_connection_busy_during_a_swap_is_closed_when_its_endpoint_is_gone(
    backend: Backend, backend2: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    async with httpx.AsyncClient() as client:
        busy = asyncio.create_task(client.get(proxy.url, headers={"x-delay": "0.3"}))
        await open_upstream_connections(backend, 1)
        await proxy.proxy.apply(snapshot([to("two")], [cluster("two", backend2.port)], version="2"))
        assert (await busy).status_code == 200
    await open_upstream_connections(backend, 0)


@pytest.fixture
async def dies_on_second_request() -> AsyncIterator[tuple[int, list[bytes]]]:
    """An upstream that answers a connection's first request and dies reading its second."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            for number in range(2):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                seen.append(head.split(b"\r\n")[0] + b" " + await reader.readexactly(length))
                if number == 0:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1]), seen
    server.close()


async def test_a_post_the_upstream_read_before_dying_is_not_replayed(
    dies_on_second_request: tuple[int, list[bytes]], run_proxy: Run
) -> None:
    port, seen = dies_on_second_request
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", port)]))
    async with httpx.AsyncClient() as client:
        assert (await client.post(proxy.url, content=b"first")).status_code == 200
        # On the pooled connection: the upstream reads it, then dies. It may have acted on it.
        second = await client.post(proxy.url, content=b"second")
    assert second.status_code == 503
    assert [line.rsplit(b" ", 1)[1] for line in seen] == [b"first", b"second"]


@pytest.fixture
async def answers_before_the_body() -> AsyncIterator[tuple[int, list[bytes]]]:
    """An upstream that refuses a PUT on its head alone, before reading its body (as an app
    that checks permissions first does), then reads on: the body's length, then the next
    request. It answers 400 to what is not a request, as uvicorn does."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n")[0]
                seen.append(line)
                if not line.endswith(b" HTTP/1.1") or line.split(b" ")[0] not in (b"GET", b"PUT"):
                    writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    break
                if line.startswith(b"PUT"):
                    writer.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\nno")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1]), seen
    server.close()


async def test_a_connection_answered_before_its_request_body_is_not_reused(
    answers_before_the_body: tuple[int, list[bytes]], run_proxy: Run
) -> None:
    port, seen = answers_before_the_body
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", port)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"PUT /users/7/permissions HTTP/1.1\r\nhost: x\r\ncontent-length: 20\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 403")
    writer.write(b'{"roles": ["admin"]}')  # the body, after the answer
    await writer.drain()
    writer.close()
    async with httpx.AsyncClient() as client:
        # Had the upstream connection gone back to the pool, the upstream would have read this
        # request's first 20 bytes as the PUT's body and the rest as garbage: a 400.
        answer = await client.get(f"{proxy.url}/next")
    assert answer.status_code == 200, answer.text
    assert seen == [b"PUT /users/7/permissions HTTP/1.1", b"GET /next HTTP/1.1"]
