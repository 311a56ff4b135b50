"""Upgrade requests: a WebSocket passes through as a tunnel after the upstream's 101, and any
other answer is a normal response."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gossamer.snapshot import ListenerLimits, Snapshot

from .backend import Backend
from .harness import Running, cluster, exchange, snapshot, to
from .raw_upstream import serving
from .waiting import LoopErrors, eventually, idle
from .websocket import (
    BINARY,
    CLOSE,
    TEXT,
    EchoServer,
    accept_key,
    encode_frame,
    open_websocket,
    read_frame,
    read_head,
)

Run = Callable[[Snapshot], Awaitable[Running]]


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = await EchoServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def loop_errors() -> AsyncIterator[LoopErrors]:
    errors = LoopErrors().install(asyncio.get_running_loop())
    yield errors
    assert errors.seen == []


async def test_a_websocket_passes_through_after_the_101(
    echo: EchoServer, run_proxy: Run, loop_errors: LoopErrors
) -> None:
    proxy = await run_proxy(snapshot([to("ws")], [cluster("ws", echo.port)]))
    reader, writer, status, headers, key = await open_websocket(proxy.port)
    assert status.startswith(b"HTTP/1.1 101 ")
    assert headers["upgrade"] == "websocket"
    assert headers["connection"].lower() == "upgrade"
    assert headers["sec-websocket-accept"] == accept_key(key).decode()
    seen = echo.handshakes[0]
    assert (seen["upgrade"], seen["connection"]) == ("websocket", "upgrade")
    assert seen["sec-websocket-key"] == key.decode()
    # Each length encoding: 7-bit, 16-bit and 64-bit.
    for opcode, payload in (
        (TEXT, b"hello"),
        (TEXT, b"x" * 300),
        (BINARY, bytes(range(256)) * 400),
    ):
        writer.write(encode_frame(opcode, payload, masked=True))
        assert await asyncio.wait_for(read_frame(reader), 5.0) == (opcode, payload)
    writer.write(encode_frame(CLOSE, b"\x03\xe8", masked=True))
    assert await asyncio.wait_for(read_frame(reader), 5.0) == (CLOSE, b"\x03\xe8")
    assert await asyncio.wait_for(reader.read(), 5.0) == b""
    writer.close()
    await eventually(lambda: idle(proxy.proxy), what="tunnel and its connections closed")
    assert 'response_code="101"' in proxy.proxy.stats.prometheus()


async def test_bytes_sent_with_the_handshake_reach_the_upstream_after_it(
    echo: EchoServer, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([to("ws")], [cluster("ws", echo.port)]))
    early = encode_frame(TEXT, b"eager", masked=True)
    reader, writer, status, _, _ = await open_websocket(proxy.port, first=early)
    assert status.startswith(b"HTTP/1.1 101 ")
    assert await asyncio.wait_for(read_frame(reader), 5.0) == (TEXT, b"eager")
    writer.close()


async def test_either_side_closing_closes_the_other(
    echo: EchoServer, run_proxy: Run, loop_errors: LoopErrors
) -> None:
    proxy = await run_proxy(snapshot([to("ws")], [cluster("ws", echo.port)]))
    _, writer, _, _, _ = await open_websocket(proxy.port)
    writer.close()
    await eventually(lambda: not echo.writers, what="upstream side closed")
    await eventually(lambda: idle(proxy.proxy), what="proxy idle")
    reader, writer, _, _, _ = await open_websocket(proxy.port)
    await eventually(lambda: len(echo.writers) == 1)
    await echo.stop()
    assert await asyncio.wait_for(reader.read(), 5.0) == b""
    writer.close()
    await eventually(lambda: idle(proxy.proxy), what="proxy idle")


async def test_a_half_close_passes_through_and_the_other_way_stays_open(run_proxy: Run) -> None:
    heard: list[bytes] = []

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"
        )
        heard.append(await reader.read())
        writer.write(b"upstream still talking")
        await writer.drain()

    async with serving(upstream) as port:
        proxy = await run_proxy(snapshot([to("x")], [cluster("x", port)]))
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n")
        status, _ = await asyncio.wait_for(read_head(reader), 5.0)
        assert status.startswith(b"HTTP/1.1 101 ")
        writer.write(b"client says bye")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5.0) == b"upstream still talking"
        writer.close()
    assert heard == [b"client says bye"]
    await eventually(lambda: idle(proxy.proxy), what="proxy idle")


async def test_a_silent_tunnel_is_closed_after_the_idle_timeout(
    echo: EchoServer, run_proxy: Run
) -> None:
    limits = ListenerLimits(idle_timeout=0.2)
    proxy = await run_proxy(snapshot([to("ws")], [cluster("ws", echo.port)], limits=limits))
    reader, writer, _, _, _ = await open_websocket(proxy.port)
    writer.write(encode_frame(TEXT, b"ping", masked=True))
    assert await asyncio.wait_for(read_frame(reader), 5.0) == (TEXT, b"ping")
    assert await asyncio.wait_for(reader.read(), 5.0) == b""
    writer.close()
    await eventually(lambda: idle(proxy.proxy), what="proxy idle")


async def test_draining_closes_open_tunnels_at_the_deadline(
    echo: EchoServer, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([to("ws")], [cluster("ws", echo.port)]))
    reader, writer, _, _, _ = await open_websocket(proxy.port)
    await proxy.proxy.drain(timeout=0.2)
    assert await asyncio.wait_for(reader.read(), 5.0) == b""
    writer.close()


async def test_a_refused_upgrade_is_a_normal_response_then_the_connection_closes(
    backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    raw = await exchange(
        proxy.port,
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in head
    assert b'"target": "/ws"' in body
    seen = backend.requests[0]
    assert (seen.header("upgrade"), seen.header("connection")) == ("websocket", "upgrade")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nConnection: upgrade\r\n"
            b"Content-Length: 3\r\n\r\nabc",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nConnection: upgrade\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501),
    ],
    ids=["upgrade with a content-length body", "upgrade with a chunked body", "CONNECT"],
)
async def test_upgrades_the_proxy_will_not_tunnel_are_refused(
    request_bytes: bytes, status: int, backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    raw = await exchange(proxy.port, request_bytes)
    assert raw.startswith(b"HTTP/1.1 %d " % status), raw
    assert backend.requests == []


async def test_an_unasked_101_is_a_502_and_nothing_escapes_the_loop(
    run_proxy: Run, loop_errors: LoopErrors
) -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nhi"
        )
        await writer.drain()
        await reader.read()

    async with serving(upstream) as port:
        proxy = await run_proxy(snapshot([to("x")], [cluster("x", port)]))
        raw = await exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 502 "), raw
    assert b"x-gossamer-reason: upstream switched protocols unasked" in raw
    await eventually(lambda: idle(proxy.proxy), what="proxy idle")
