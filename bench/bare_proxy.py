"""The least an HTTP/1.1 proxy on uvloop and httptools does: the floor of Gossamer's stack.

Usage: python bench/bare_proxy.py PORT UPSTREAM_PORT

A reference for bench/proxy_bench.py, not a proxy to use: one upstream, one upstream
connection per client connection (so no pool and no balancing), requests without bodies, no
routing, no header rules, no timeouts, no metrics, no error handling beyond closing. It parses
both sides with httptools and writes each head back out from the parsed headers, as any HTTP
proxy must; Gossamer's distance to it is what its features cost, and its distance to nginx is
what the stack costs.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    """The one upstream connection of a client connection: responses go back to the client."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.reason = b""
        self.headers: list[bytes] = []
        self.out: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.client.upstream_ready(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        if self.out:
            self.client.write(b"".join(self.out))
            self.out = []

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()

    def on_status(self, status: bytes) -> None:
        self.reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        status = b"%d" % self.parser.get_status_code()
        self.out += (b"HTTP/1.1 ", status, b" ", self.reason, b"\r\n", *self.headers, b"\r\n")
        self.headers = []

    def on_body(self, body: bytes) -> None:
        self.out.append(body)


class Client(asyncio.Protocol):
    """A client connection: each request's head is rebuilt and sent on its upstream connection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[bytes] = []
        self.pending: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.upstream: Upstream | None = None
        self.connecting: asyncio.Task[object] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        self.connecting = loop.create_task(
            loop.create_connection(lambda: Upstream(self), "127.0.0.1", self.upstream_port)
        )

    def upstream_ready(self, upstream: Upstream) -> None:
        self.upstream = upstream
        if self.pending and upstream.transport is not None:
            upstream.transport.write(b"".join(self.pending))
            self.pending = []

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        method = self.parser.get_method()
        head = b"".join((method, b" ", self.url, b" HTTP/1.1\r\n", *self.headers, b"\r\n"))
        self.url = b""
        self.headers = []
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.write(head)
        else:
            self.pending.append(head)

    def write(self, data: bytes) -> None:
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
