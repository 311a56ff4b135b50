"""Start a proxy in-process in front of backends, and talk to it with raw bytes or httpx."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gossamer.proxy import AdminServer, Proxy
from gossamer.snapshot import (
    Cluster,
    Endpoint,
    Listener,
    ListenerLimits,
    PoolLimits,
    Route,
    RouteTable,
    Snapshot,
    VirtualHost,
    WeightedCluster,
)


def cluster(name: str, *ports: int, **settings: object) -> Cluster:
    return Cluster(
        name=name,
        endpoints=tuple(Endpoint(address="127.0.0.1", port=p) for p in ports),
        **settings,  # type: ignore[arg-type]
    )


def snapshot(
    routes: Sequence[Route],
    clusters: Sequence[Cluster],
    *,
    version: str = "1",
    limits: ListenerLimits | None = None,
    domains: tuple[str, ...] = ("*",),
) -> Snapshot:
    return Snapshot(
        version=version,
        listeners=(
            Listener(
                name="outbound",
                address="127.0.0.1",
                port=0,
                role="outbound",
                route_table="outbound",
                limits=limits or ListenerLimits(),
            ),
        ),
        route_tables=(
            RouteTable(
                name="outbound",
                virtual_hosts=(VirtualHost(name="all", domains=domains, routes=tuple(routes)),),
            ),
        ),
        clusters=tuple(clusters),
    )


def to(name: str, **settings: object) -> Route:
    """A catch-all route to one cluster."""
    return Route(name=f"to-{name}", clusters=(WeightedCluster(cluster=name),), **settings)  # type: ignore[arg-type]


class Running:
    """A proxy and its admin endpoint, started on free ports."""

    def __init__(self, proxy: Proxy, admin: AdminServer) -> None:
        self.proxy = proxy
        self.admin = admin

    @property
    def port(self) -> int:
        return self.proxy.port("outbound")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def start_proxy(config: Snapshot) -> Running:
    proxy = Proxy()
    await proxy.apply(config)
    admin = AdminServer(proxy)
    await admin.start("127.0.0.1", 0)
    return Running(proxy, admin)


async def exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes on a new connection and read until the proxy closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Read one response with a content-length body from a raw connection."""
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return status, headers, body


__all__ = [
    "PoolLimits",
    "Running",
    "cluster",
    "exchange",
    "read_response",
    "snapshot",
    "start_proxy",
    "to",
]
