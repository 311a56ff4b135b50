"""Malformed and smuggling-prone requests get a 400 (or 431/414) and a closed connection,
and the proxy keeps serving everyone else."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import httpx
import pytest

from gossamer.snapshot import ListenerLimits, Snapshot

from .backend import Backend
from .harness import Running, cluster, exchange, snapshot, to

Run = Callable[[Snapshot], Awaitable[Running]]

MALFORMED = [
    (
        "content-length and transfer-encoding",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "two different content-lengths",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        400,
    ),
    (
        "transfer-encoding not ending in chunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "unknown transfer-encoding",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        400,
    ),
    (
        "bad chunk size",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    ("negative content-length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    ("space before the colon", b"GET / HTTP/1.1\r\nHost: a\r\nx-bad : 1\r\n\r\n", 400),
    ("invalid header name", b"GET / HTTP/1.1\r\nHost: a\r\nx(bad): 1\r\n\r\n", 400),
    (
        "obs-fold continuation line",
        b"GET / HTTP/1.1\r\nHost: a\r\nx-folded: one\r\n two\r\n\r\n",
        400,
    ),
    ("NUL in the request line", b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("bare CR in the request line", b"GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("LF in a header value", b"GET / HTTP/1.1\r\nHost: a\r\nx-v: a\nb\r\n\r\n", 400),
    ("invalid method token", b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("unsupported HTTP version", b"GET / HTTP/3.7\r\nHost: a\r\n\r\n", 400),
    ("missing host in HTTP/1.1", b"GET / HTTP/1.1\r\nx-a: b\r\n\r\n", 400),
    ("two host headers", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("not HTTP at all", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03hello\r\n\r\n", 400),
]


@pytest.mark.parametrize(
    ("data", "status"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
async def test_malformed_requests_are_refused_and_never_reach_the_upstream(
    data: bytes, status: int, backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    raw = await exchange(proxy.port, data)
    assert raw.startswith(b"HTTP/1.1 %d " % status), raw[:200]
    assert b"x-gossamer-reason:" in raw
    assert b"connection: close" in raw
    assert backend.requests == []
    async with httpx.AsyncClient() as client:
        assert (await client.get(proxy.url)).status_code == 200


async def test_a_smuggled_second_request_is_not_forwarded(backend: Backend, run_proxy: Run) -> None:
    # CL.TE: a front end reading Content-Length would forward "GET /admin" as a second request.
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    await exchange(
        proxy.port,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    assert [r.target for r in backend.requests] == []


async def test_header_and_target_limits(backend: Backend, run_proxy: Run) -> None:
    limits = ListenerLimits(max_request_line=100, max_header_bytes=1000, max_headers=10)
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)], limits=limits))
    too_long = await exchange(proxy.port, b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert too_long.startswith(b"HTTP/1.1 414 ")
    big = await exchange(
        proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\nx-big: " + b"b" * 2000 + b"\r\n\r\n"
    )
    assert big.startswith(b"HTTP/1.1 431 ")
    many = b"".join(b"x-h%d: v\r\n" % n for n in range(20))
    assert (
        await exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n")
    ).startswith(b"HTTP/1.1 431 ")


async def test_slow_headers_get_a_408(backend: Backend, run_proxy: Run) -> None:
    limits = ListenerLimits(header_timeout=0.3)
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)], limits=limits))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n")
    raw = await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    assert raw.startswith(b"HTTP/1.1 408 ")
    assert b"request headers timeout" in raw


async def test_a_request_body_slower_than_the_request_timeout_gets_a_408(
    backend: Backend, run_proxy: Run
) -> None:
    # Headers arrive at once, then the body trickles: the header timeout is met, the whole
    # request is not. The upstream never sees the request finish; other clients are served.
    limits = ListenerLimits(request_timeout=0.6, header_timeout=10.0)
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)], limits=limits))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(100):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.05)

    sender = loop.create_task(trickle())
    try:
        raw = await asyncio.wait_for(reader.read(), 5.0)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        writer.close()
    assert raw.startswith(b"HTTP/1.1 408 "), raw
    assert b"request timeout" in raw
    assert 0.6 <= loop.time() - started < 2.0
    assert not any(r.target == "/upload" and len(r.body) == 1000 for r in backend.requests)
    answer = await exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")


async def test_idle_connections_are_closed(backend: Backend, run_proxy: Run) -> None:
    limits = ListenerLimits(idle_timeout=0.3)
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)], limits=limits))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await asyncio.wait_for(reader.read(), 5.0) == b""
    writer.close()
