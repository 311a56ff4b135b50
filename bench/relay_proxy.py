"""Bytes from the client to the upstream and back, unread: the floor of any proxy on uvloop.

Usage: python bench/relay_proxy.py PORT UPSTREAM_PORT

A reference for bench/proxy_bench.py, not a proxy to use. Each client connection gets one
upstream connection, and whatever arrives on one side is written to the other as it is: no
HTTP parsing, no head to build, nothing to route. What it costs is what a Python process on
uvloop costs per read and write; how it compares with nginx at one connection is the latency
floor of the stack, which no HTTP proxy built on it can go below.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import uvloop


class Upstream(asyncio.Protocol):
    """The upstream side of one client connection."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.client.upstream_ready(self.transport)

    def data_received(self, data: bytes) -> None:
        self.client.send(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class Client(asyncio.Protocol):
    """A client connection, relayed byte for byte to its own upstream connection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.pending: list[bytes] = []
        self.connecting: asyncio.Task[object] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        self.connecting = loop.create_task(
            loop.create_connection(lambda: Upstream(self), "127.0.0.1", self.upstream_port)
        )

    def upstream_ready(self, upstream: asyncio.Transport) -> None:
        self.upstream = upstream
        if self.pending:
            upstream.write(b"".join(self.pending))
            self.pending = []

    def data_received(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.write(data)
        else:
            self.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def serve(port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(upstream_port), "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))
