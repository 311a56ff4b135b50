"""The request path makes no reference cycles: what a finished request leaves is freed by its
reference counts, never by the garbage collector.

A cycle per request (an exchange keeping the try that refers back to it, a callback keeping its
owner) turns every request into garbage the collector must find, and its passes then take a
share of the proxy's CPU that grows with the load. The collector is off while requests run, so
any cycle they leave is still there to be counted.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable

from gossamer.snapshot import RetryPolicy, Snapshot

from .backend import Backend
from .harness import Running, cluster, snapshot, to

Run = Callable[[Snapshot], Awaitable[Running]]


async def exchange(port: int, count: int, head: bytes) -> set[bytes]:
    """`count` requests one after another, on one keep-alive connection unless the head says
    `connection: close` (then a connection each); their status codes."""
    statuses: set[bytes] = set()
    writer: asyncio.StreamWriter | None = None
    try:
        for _ in range(count):
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head)
            await writer.drain()
            response = await reader.readuntil(b"\r\n\r\n")
            statuses.add(response.split(b" ", 2)[1])
            length = next(
                int(line.split(b":", 1)[1])
                for line in response.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            if b"connection: close" in head:
                writer.close()
                await writer.wait_closed()
                writer = None
    finally:
        if writer is not None:
            writer.close()
            await writer.wait_closed()
    return statuses


async def garbage_of(port: int, head: bytes, count: int) -> tuple[int, set[bytes]]:
    await exchange(port, 20, head)  # connections, pools and caches in place first
    gc.collect()
    gc.disable()
    try:
        statuses = await exchange(port, count, head)
        await asyncio.sleep(0.05)  # let the last request's callbacks run
        return gc.collect(), statuses
    finally:
        gc.enable()


async def test_forwarded_retried_and_refused_requests_leave_no_cycles(
    backend: Backend, run_proxy: Run
) -> None:
    retries = RetryPolicy(attempts=2, retry_on=("5xx",), backoff_base=0.001)
    proxy = await run_proxy(
        snapshot([to("one", retries=retries)], [cluster("one", backend.port)], domains=("app",))
    )
    plain = b"GET / HTTP/1.1\r\nHost: app\r\n\r\n"
    retried = b"GET / HTTP/1.1\r\nHost: app\r\nx-status: 503\r\n\r\n"
    unrouted = b"GET / HTTP/1.1\r\nHost: elsewhere\r\n\r\n"
    closing = b"GET / HTTP/1.1\r\nHost: app\r\nconnection: close\r\n\r\n"
    for head, status in ((plain, b"200"), (retried, b"503"), (unrouted, b"404"), (closing, b"200")):
        found, statuses = await garbage_of(proxy.port, head, count=100)
        assert statuses == {status}
        # The event loop may leave an object or two of its own; a cycle per request (or per
        # connection, or per retried try) would be a hundred or more.
        assert found < 10, (head, found)
