"""TLS passthrough: a TCP listener routes each connection by the server name of its ClientHello
to real TLS servers, which terminate the TLS themselves (the proxy never holds their keys)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gossamer.proxy import Proxy
from gossamer.snapshot import (
    Cluster,
    Endpoint,
    Listener,
    Snapshot,
    SniRoute,
    TcpRoute,
    WeightedCluster,
)

from .certificates import self_signed
from .waiting import eventually


class TlsServer:
    """A TLS server for one name: greets each client with its name once the handshake is done."""

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.cert, key = self_signed(name, folder)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(self.cert, key)
        self.server: asyncio.Server | None = None

    async def start(self) -> TlsServer:
        self.server = await asyncio.start_server(self._greet, "127.0.0.1", 0, ssl=self.context)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _greet(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"hello from {self.name}\n".encode())
        await writer.drain()
        writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[dict[str, TlsServer]]:
    started = {
        name: await TlsServer(name, tmp_path / "certs").start()
        for name in ("shop.example", "api.example")
    }
    yield started
    for server in started.values():
        server.close()


async def passthrough_proxy(servers: dict[str, TlsServer]) -> Proxy:
    clusters = tuple(
        Cluster(name=f"outbound|443||{name}", endpoints=(Endpoint("127.0.0.1", server.port),))
        for name, server in servers.items()
    )
    route = TcpRoute(
        clusters=(),
        sni=(
            SniRoute(("shop.example",), (WeightedCluster("outbound|443||shop.example"),)),
            SniRoute(("*.example",), (WeightedCluster("outbound|443||api.example"),)),
        ),
    )
    listener = Listener("gateway-passthrough", "127.0.0.1", 0, "gateway", "", tcp=route)
    proxy = Proxy()
    await proxy.apply(Snapshot(version="1", listeners=(listener,), clusters=clusters))
    return proxy


async def tls_line(port: int, name: str, trusted: Path) -> bytes:
    """A TLS client's first line from the server it reached asking for `name`."""
    context = ssl.create_default_context(cafile=str(trusted))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=name
    )
    try:
        return await asyncio.wait_for(reader.readline(), 5.0)
    finally:
        writer.close()


async def test_each_connection_reaches_the_server_its_hello_names(
    servers: dict[str, TlsServer],
) -> None:
    proxy = await passthrough_proxy(servers)
    try:
        port = proxy.tcp.port("gateway-passthrough")
        shop, api = servers["shop.example"], servers["api.example"]
        # The client checks the server's own certificate: the TLS is the servers', end to end.
        assert await tls_line(port, "shop.example", shop.cert) == b"hello from shop.example\n"
        assert await tls_line(port, "api.example", api.cert) == b"hello from api.example\n"
    finally:
        await proxy.close()


async def test_no_route_for_the_name_or_no_tls_at_all_closes_the_connection(
    servers: dict[str, TlsServer],
) -> None:
    proxy = await passthrough_proxy(servers)
    try:
        port = proxy.tcp.port("gateway-passthrough")
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await tls_line(port, "elsewhere.test", servers["shop.example"].cert)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nhost: shop.example\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 5.0) == b""
        writer.close()
        counters = proxy.stats.counters
        await eventually(lambda: counters.get("gossamer_tcp_not_tls_total") == 1)
        assert counters["gossamer_tcp_no_sni_route_total"] == 1
    finally:
        await proxy.close()
