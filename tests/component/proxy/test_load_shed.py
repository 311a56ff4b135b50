"""Load shedding: a 503 that says `connection: close` (the request's body is unread) closes the
connection, and nothing the client pipelined behind it is served."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gossamer.snapshot import ListenerLimits, Snapshot

from .harness import Running, cluster, exchange, snapshot, to
from .raw_upstream import serving
from .waiting import eventually

Run = Callable[[Snapshot], Awaitable[Running]]


async def test_a_shed_request_closes_its_connection(run_proxy: Run) -> None:
    targets: list[bytes] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        targets.append((await reader.readuntil(b"\r\n\r\n")).split(b" ")[1])
        await reader.read()

    async with serving(hold) as port:
        limits = ListenerLimits(max_concurrent_requests=1)
        proxy = await run_proxy(snapshot([to("x")], [cluster("x", port)], limits=limits))
        _, busy = await asyncio.open_connection("127.0.0.1", proxy.port)
        busy.write(b"GET /held HTTP/1.1\r\nHost: a\r\n\r\n")
        await eventually(lambda: targets == [b"/held"], what="first request upstream")
        raw = await exchange(
            proxy.port,
            b"POST /shed HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /behind HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        busy.close()
    assert raw.startswith(b"HTTP/1.1 503 ")
    assert raw.count(b"HTTP/1.1 ") == 1 and b"connection: close" in raw
    assert targets == [b"/held"]
