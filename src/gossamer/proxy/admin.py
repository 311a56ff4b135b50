"""The admin endpoint (127.0.0.1:15000 by default): readiness, metrics, config, clusters, drain."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import cast

import httptools
import msgspec

from gossamer.proxy import local_reply as lr
from gossamer.proxy import native
from gossamer.proxy.cluster import ClusterState, EndpointState
from gossamer.proxy.server import Proxy
from gossamer.proxy.sockets import serve
from gossamer.snapshot import dump

Handler = Callable[[], Awaitable[tuple[int, bytes, bytes]]]


class AdminServer:
    """A few read-only pages and one action (POST /drain), for people and probes."""

    def __init__(self, proxy: Proxy, on_drain: Callable[[], None] | None = None) -> None:
        self.proxy = proxy
        self.on_drain = on_drain
        self.server: asyncio.Server | None = None
        self.routes: dict[tuple[bytes, bytes], Handler] = {
            (b"GET", b"/ready"): self.ready,
            (b"GET", b"/healthz"): self.healthz,
            (b"GET", b"/stats/prometheus"): self.prometheus,
            (b"GET", b"/config_dump"): self.config_dump,
            (b"GET", b"/clusters"): self.clusters,
            (b"GET", b"/listeners"): self.listeners,
            (b"POST", b"/drain"): self.drain,
        }

    async def start(self, address: str, port: int) -> None:
        """Bind the admin port."""
        self.server = await serve(lambda: _AdminConnection(self), address, port, backlog=100)

    @property
    def port(self) -> int:
        """The bound port."""
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop serving."""
        if self.server is not None:
            self.server.close()

    async def handle(self, method: bytes, path: bytes) -> tuple[int, bytes, bytes]:
        """(status, content type, body) for one request."""
        handler = self.routes.get((method, path.split(b"?", 1)[0]))
        if handler is None:
            known = ", ".join(f"{m.decode()} {p.decode()}" for m, p in self.routes)
            return 404, b"text/plain", f"unknown admin path; try {known}\n".encode()
        return await handler()

    async def ready(self) -> tuple[int, bytes, bytes]:
        """200 once a snapshot with listeners is applied and the proxy is not draining."""
        proxy = self.proxy
        if proxy.snapshot is None or proxy.draining or not (proxy.listeners or proxy.tcp.handles):
            return 503, b"text/plain", b"not ready\n"
        return 200, b"text/plain", b"ready\n"

    async def healthz(self) -> tuple[int, bytes, bytes]:
        """200 while the process runs its loop."""
        return 200, b"text/plain", b"ok\n"

    async def prometheus(self) -> tuple[int, bytes, bytes]:
        """Every metric in Prometheus text format."""
        return 200, b"text/plain; version=0.0.4", self.proxy.stats.prometheus().encode()

    async def config_dump(self) -> tuple[int, bytes, bytes]:
        """The snapshot in force, with its version and when it was applied, and whether the hot
        path runs compiled."""
        proxy = self.proxy
        snapshot = msgspec.json.decode(dump(proxy.snapshot)) if proxy.snapshot else None
        body = {
            "version": proxy.snapshot.version if proxy.snapshot else None,
            "applied_at": proxy.applied_at or None,
            "hot_path": native.MODE,
            "snapshot": snapshot,
        }
        return 200, b"application/json", _json(body)

    async def clusters(self) -> tuple[int, bytes, bytes]:
        """Each cluster's endpoints: health, ejection, load and pool state."""
        out = []
        for cluster in self.proxy.clusters.values():
            out.append(
                {
                    "name": cluster.name,
                    "summary": repr(cluster),
                    "active_requests": cluster.counters.active_requests,
                    "connections": cluster.counters.connections,
                    "pending": len(cluster.pending),
                    "health_check": cluster.config.health_check is not None,
                    "endpoints": [
                        {
                            "address": f"{e.address}:{e.port}",
                            "healthy": e.healthy,
                            "health_check": _check_state(cluster, e),
                            "ejected": bool(e.ejected_until),
                            "ejections": e.ejections,
                            "active": e.active,
                            "connections": e.connections,
                            "idle": len(e.idle),
                            "ewma_ms": round(e.ewma * 1000, 3),
                        }
                        for e in cluster.endpoints
                    ],
                }
            )
        return 200, b"application/json", _json(out)

    async def listeners(self) -> tuple[int, bytes, bytes]:
        """Each listener's bound address and open connections."""
        out = [
            {
                "name": name,
                "address": f"{h.config.address}:{h.port}",
                "role": h.config.role,
                "connections": len(h.connections),
            }
            for name, h in self.proxy.listeners.items()
        ]
        out += [
            {
                "name": name,
                "address": f"{h.config.address}:{h.port}",
                "role": h.config.role,
                "protocol": "tcp",
                "connections": len(h.connections),
            }
            for name, h in self.proxy.tcp.handles.items()
        ]
        return 200, b"application/json", _json(out)

    async def drain(self) -> tuple[int, bytes, bytes]:
        """Start a graceful drain: stop accepting, finish what is in flight, exit."""
        if self.on_drain is not None:
            self.on_drain()
        else:
            asyncio.get_running_loop().create_task(self.proxy.drain())
        return 202, b"text/plain", b"draining\n"


def _check_state(cluster: ClusterState, endpoint: EndpointState) -> dict[str, object] | None:
    if cluster.config.health_check is None:
        return None
    return {
        "verdict": "failing" if endpoint.check_failed else "passing",
        "failed_in_a_row": endpoint.failed_checks,
        "passed_in_a_row": endpoint.passed_checks,
    }


class _AdminConnection(asyncio.Protocol):
    """One admin client; requests are answered one at a time."""

    def __init__(self, admin: AdminServer) -> None:
        self.admin = admin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(lr.render(400, "malformed request", close=True))
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        keep_alive = self.parser.should_keep_alive()
        url, self.url = self.url, b""
        task = asyncio.get_running_loop().create_task(self._answer(method, url, keep_alive))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, method: bytes, url: bytes, keep_alive: bool) -> None:
        status, content_type, body = await self.admin.handle(method, url)
        if self.transport is None or self.transport.is_closing():
            return
        data = lr.render(
            status, "", close=not keep_alive, body=body, extra=[(b"content-type", content_type)]
        )
        self.transport.write(data)
        if not keep_alive:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def _json(value: object) -> bytes:
    # msgspec, which the snapshot already loads: the json module would cost every proxy 0.3 MB.
    return msgspec.json.format(msgspec.json.encode(value), indent=2)
