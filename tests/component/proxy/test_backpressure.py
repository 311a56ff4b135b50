"""Backpressure across requests: a response that starts while the client is not reading is held
back at the upstream, not buffered in the proxy."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gossamer.snapshot import DirectResponse, Route, RouteMatch, Snapshot, StringMatch

from .backend import Backend
from .harness import Running, cluster, snapshot, to
from .waiting import eventually

Run = Callable[[Snapshot], Awaitable[Running]]
MB = 1 << 20


async def read_exactly_counting(reader: asyncio.StreamReader, size: int) -> None:
    left = size
    while left:
        left -= len(await reader.read(min(left, MB)))


async def test_a_pipelined_response_behind_a_paused_client_does_not_flow(
    backend: Backend, run_proxy: Run
) -> None:
    # A local answer big enough to fill the socket buffers leaves the client write-paused;
    # the next pipelined request then connects upstream while no new pause event can come.
    big = "a" * (32 * MB)
    routes = [
        Route(
            name="big",
            match=RouteMatch(path=StringMatch(kind="exact", value="/big")),
            direct_response=DirectResponse(status=200, body=big),
        ),
        to("one"),
    ]
    proxy = await run_proxy(snapshot(routes, [cluster("one", backend.port)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(
        b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /stream HTTP/1.1\r\nHost: a\r\nx-body-size: %d\r\n\r\n" % (64 * MB)
    )
    await eventually(lambda: len(backend.requests) == 1, what="second request upstream")
    (connection,) = proxy.proxy.listeners["outbound"].connections
    assert connection.write_paused
    current = connection.current
    assert current is not None and current.current is not None
    sending = current.current.connection
    assert sending is not None
    upstream = sending.transport
    assert upstream is not None and not upstream.is_reading(), "upstream read while client paused"
    # Reading resumes the upstream: everything arrives.
    head = await reader.readuntil(b"\r\n\r\n")
    await read_exactly_counting(reader, int(head.split(b"content-length: ")[1].split(b"\r\n")[0]))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
    assert b"content-length: %d" % (64 * MB) in head
    await asyncio.wait_for(read_exactly_counting(reader, 64 * MB), 20.0)
    writer.close()
