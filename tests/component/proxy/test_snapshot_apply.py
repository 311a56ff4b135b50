"""A new snapshot reaches every request that starts after it, including those on connections
that were open before it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from gossamer.snapshot import Snapshot

from .backend import Backend
from .harness import Running, cluster, read_response, snapshot, to

Run = Callable[[Snapshot], Awaitable[Running]]


async def test_a_keep_alive_connection_routes_with_the_newest_snapshot(
    backend: Backend, backend2: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        _, _, body = await asyncio.wait_for(read_response(reader), 5.0)
        assert json.loads(body)["backend"] == "one"
        await proxy.proxy.apply(snapshot([to("two")], [cluster("two", backend2.port)], version="2"))
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        _, _, body = await asyncio.wait_for(read_response(reader), 5.0)
        assert json.loads(body)["backend"] == "two"
    finally:
        writer.close()


async def test_a_drain_after_a_snapshot_swap_closes_keep_alive_connections_cleanly(
    backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await asyncio.wait_for(read_response(reader), 5.0)
        await proxy.proxy.apply(snapshot([to("one")], [cluster("one", backend.port)], version="2"))
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nx-delay: 0.2\r\n\r\n")
        await asyncio.sleep(0.05)
        drain = asyncio.create_task(proxy.proxy.drain(timeout=3.0))
        status, headers, _ = await asyncio.wait_for(read_response(reader), 5.0)
        assert status == 200
        # The client is told, rather than finding the connection closed under its next request.
        assert headers["connection"] == "close"
        await asyncio.wait_for(drain, 5.0)
    finally:
        writer.close()
