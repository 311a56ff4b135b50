"""The proxy: listeners bound to addresses, clusters, and the atomic swap of snapshots."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import ssl
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from gossamer.proxy.apiproduct import ProductGate
from gossamer.proxy.budget import Budgets
from gossamer.proxy.cluster import ClusterState
from gossamer.proxy.downstream import DownstreamConnection
from gossamer.proxy.guard import RequestGuard
from gossamer.proxy.healthcheck import HealthChecker
from gossamer.proxy.listener import ListenerRuntime
from gossamer.proxy.mtls import MeshAcceptor, MeshTls, accepts_tls
from gossamer.proxy.router import CompiledRouteTable
from gossamer.proxy.sockets import serve
from gossamer.proxy.span_export import ProxyIdentity, SpanExporter
from gossamer.proxy.stats import ProxyStats
from gossamer.proxy.tcp_listeners import TcpListeners, http_listeners
from gossamer.proxy.timers import TimerWheel
from gossamer.proxy.tls import ServerCertificates, listening_context
from gossamer.proxy.tracing import SpanBuffer, Tracer
from gossamer.snapshot import Listener, Snapshot, SnapshotError
from gossamer.snapshot.codec import check

if TYPE_CHECKING:
    from gossamer.proxy.http2_connection import Http2Connection
    from gossamer.security.jwks import JwksCache

    ClientConnection = DownstreamConnection | Http2Connection
    """A connection a listener accepted: HTTP/1.1, or HTTP/2 once the client chose it."""

SWEEP_INTERVAL = 0.5


class ListenerHandle:
    """A bound listener and its connections; its runtime is swapped when a snapshot changes it."""

    def __init__(self, proxy: Proxy, config: Listener, runtime: ListenerRuntime) -> None:
        self.proxy = proxy
        self.config = config
        self.runtime = runtime
        self.server: asyncio.Server | MeshAcceptor | None = None
        self.connections: set[ClientConnection] = set()
        self.certificates: ServerCertificates | None = (
            ServerCertificates(config.tls) if config.tls is not None else None
        )
        self._tls_slot: list[ServerCertificates] | None = None

    @property
    def port(self) -> int:
        """The port actually bound (useful when the snapshot asked for port 0)."""
        # Any: uvloop's `Server.sockets` is a list where typeshed says tuple, and compiled code
        # checks declared types.
        server: Any = self.server
        if server is None or not server.sockets:
            return self.config.port
        return int(server.sockets[0].getsockname()[1])

    async def bind(self) -> None:
        """Start accepting connections (over TLS when the listener says so)."""
        if self.config.mtls is not None:
            self.server = await MeshAcceptor.start(self, lambda: DownstreamConnection(self))
            return
        context = None
        if self.certificates is not None:
            context, self._tls_slot = listening_context(self.certificates)
        self.server = await serve(
            lambda: DownstreamConnection(self),
            self.config.address,
            self.config.port,
            context=context,
        )

    def take_certificates(self, certificates: ServerCertificates | None) -> None:
        """Serve these certificates to new handshakes from now on (the socket stays bound)."""
        self.certificates = certificates
        if self._tls_slot is not None and certificates is not None:
            self._tls_slot[0] = certificates

    def admit(self, connection: ClientConnection) -> bool:
        """Track a new connection, unless the listener is at max_connections."""
        if len(self.connections) >= self.runtime.limits.max_connections:
            return False
        self.connections.add(connection)
        return True

    def forget(self, connection: ClientConnection) -> None:
        """A connection closed."""
        self.connections.discard(connection)

    def begin_request(self) -> bool:
        """Count a request in; False means shed it (max_concurrent_requests reached)."""
        proxy = self.proxy
        if proxy.active_requests >= self.runtime.limits.max_concurrent_requests:
            proxy.stats.incr("gossamer_requests_shed_total")
            return False
        proxy.active_requests += 1
        return True

    def end_request(self) -> None:
        """Count a request out."""
        self.proxy.active_requests -= 1

    def sweep(self, now: float) -> None:
        """Enforce header and idle timeouts on every connection."""
        for connection in list(self.connections):
            connection.check_timeouts(now)

    async def drain(self, deadline: float) -> None:
        """Stop accepting, let requests in flight finish until `deadline`, then close the rest."""
        self.runtime.draining = True
        if self.server is not None:
            self.server.close()
        for connection in list(self.connections):
            connection.drain()
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            for connection in list(self.connections):
                connection.drain()
        for connection in list(self.connections):
            connection.abort()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1.0)


class Proxy:
    """Runs snapshots: `apply` swaps to a new one atomically, or raises and keeps the old."""

    def __init__(self, stats: ProxyStats | None = None) -> None:
        self.stats = stats or ProxyStats()
        self.snapshot: Snapshot | None = None
        self.listeners: dict[str, ListenerHandle] = {}
        self.clusters: dict[str, ClusterState] = {}
        self.active_requests = 0
        self.draining = False
        self.applied_at = 0.0
        self._sweeper: asyncio.Task[None] | None = None
        self.timers: TimerWheel | None = None
        self.request_ids = request_id_source()
        self._retiring: set[asyncio.Task[None]] = set()
        self.health = HealthChecker(self.stats)
        self.on_apply: list[Callable[[Snapshot], None]] = []
        self.identity: tuple[str, str, str] | None = None
        """(certificate chain file, key file, SPIFFE id) of the workload, once the CA signed it."""
        self.mesh_tls: MeshTls | None = None
        """Contexts for mesh mTLS, from the identity and the snapshot's trust anchors."""
        self.spans: SpanBuffer | None = None
        """Finished spans on their way out, kept across snapshots; made when tracing first
        names a provider."""
        self.exporter: SpanExporter | None = None
        self.jwks: JwksCache | None = None
        self.budgets = Budgets()
        """API consumers' allowances at this gateway, kept across snapshots (budget.py)."""
        self._own_outbound: str | None = None
        """Issuers' key sets, kept across snapshots; made when a snapshot first needs one."""
        self.tcp = TcpListeners(self)
        """The snapshot's opaque TCP listeners (tcp_listeners.py)."""

    def set_identity(self, cert_file: str, key_file: str, spiffe: str) -> None:
        """Use a (new) workload certificate for new handshakes from now on.

        Connections already established keep the certificate they were made with. Raises
        SnapshotError when the files cannot be used with the running snapshot's roots.
        """
        previous, self.identity = self.identity, (cert_file, key_file, spiffe)
        if self.snapshot is not None:
            try:
                mesh_tls = self._mesh_tls(self.snapshot, force=True)
            except SnapshotError:
                self.identity = previous  # keep serving with the certificate that works
                raise
            self._use_mesh_tls(mesh_tls)

    def jwks_cache(self) -> JwksCache:
        """The key-set cache of RequestAuthentication issuers, made on first use."""
        if self.jwks is None:
            from gossamer.security.jwks import JwksCache  # noqa: PLC0415

            self.jwks = JwksCache(proxy=self._own_outbound)
        return self.jwks

    def _mesh_tls(self, snapshot: Snapshot, force: bool = False) -> MeshTls | None:
        security = snapshot.security
        current = self.mesh_tls
        if self.identity is None or not security.roots:
            return None
        if (
            not force
            and current is not None
            and current.roots == security.roots
            and current.trust_domain == security.trust_domain
        ):
            return current
        cert_file, key_file, spiffe = self.identity
        try:
            return MeshTls(cert_file, key_file, spiffe, security.roots, security.trust_domain)
        except (OSError, ssl.SSLError, ValueError) as error:
            raise SnapshotError(f"mesh certificate or trust anchors unusable: {error}") from None

    def _use_mesh_tls(self, mesh_tls: MeshTls | None) -> None:
        self.mesh_tls = mesh_tls
        for cluster in self.clusters.values():
            cluster.mesh_tls = mesh_tls

    async def apply(self, snapshot: Snapshot) -> None:
        """Make `snapshot` current; on any error nothing changes and the error is raised."""
        check(snapshot)
        self._own_outbound = _outbound_url(snapshot) or self._own_outbound
        mesh_tls = self._mesh_tls(snapshot)
        _check_mtls_listeners(snapshot, mesh_tls, self.identity is not None)
        clusters = {c.name: ClusterState(c, self.clusters.get(c.name)) for c in snapshot.clusters}
        tables = {t.name: CompiledRouteTable(t) for t in snapshot.route_tables}
        tracing = snapshot.telemetry.tracing
        spans = self._span_buffer() if tracing is not None and tracing.provider else None
        runtimes = {
            listener.name: ListenerRuntime(
                listener,
                routes=tables[listener.route_table],
                clusters=clusters,
                stats=self.stats,
                node=snapshot.node,
                telemetry=snapshot.telemetry,
                version=snapshot.version,
                timers=self._timers(),
                request_ids=self.request_ids,
                guard=(
                    RequestGuard.build(snapshot.security, listener.mtls, self.jwks_cache)
                    if listener.role != "outbound"
                    else None
                ),
                tracer=Tracer(tracing, listener.role, spans) if tracing is not None else None,
                products=self._products(snapshot, listener),
            )
            for listener in http_listeners(snapshot)
        }
        kept: dict[str, ListenerHandle] = {}
        certificates: dict[str, ServerCertificates | None] = {}
        fresh: list[ListenerHandle] = []
        try:
            for listener in http_listeners(snapshot):
                handle = self.listeners.get(listener.name)
                if handle is not None and _same_address(handle.config, listener):
                    kept[listener.name] = handle
                    # Read the certificate files now: a bad one rejects the whole snapshot.
                    tls = listener.tls
                    certificates[listener.name] = ServerCertificates(tls) if tls else None
                else:
                    handle = ListenerHandle(self, listener, runtimes[listener.name])
                    await handle.bind()
                    fresh.append(handle)
            tcp = await self.tcp.prepare(snapshot, clusters)
        except (OSError, SnapshotError):
            for handle in fresh:
                if handle.server is not None:
                    handle.server.close()
            raise
        # From here on nothing can fail: swap everything at once.
        for name, handle in kept.items():
            handle.config = next(x for x in snapshot.listeners if x.name == name)
            handle.runtime = runtimes[name]
            handle.take_certificates(certificates[name])
        removed = [h for name, h in self.listeners.items() if name not in runtimes]
        for old in self.clusters.values():
            old.retire(clusters.get(old.name))
        self.listeners = {**kept, **{h.config.name: h for h in fresh}}
        self.tcp.commit(tcp)
        self.clusters = clusters
        self._use_mesh_tls(mesh_tls)
        self.health.watch(clusters)
        self._export(snapshot)
        self.snapshot = snapshot
        self.applied_at = time.time()
        self.stats.gauges["gossamer_snapshot_applied_timestamp_seconds"] = self.applied_at
        for handle in removed:
            deadline = time.monotonic() + handle.runtime.limits.drain_timeout
            task = asyncio.get_running_loop().create_task(handle.drain(deadline))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        for callback in self.on_apply:
            callback(snapshot)

    def _products(self, snapshot: Snapshot, listener: Listener) -> ProductGate | None:
        """The API products a gateway listener enforces; None elsewhere or without any."""
        products = snapshot.security.api_products
        if listener.role != "gateway" or not products:
            return None
        return ProductGate(products, self.budgets, self.stats)

    def _span_buffer(self) -> SpanBuffer:
        if self.spans is None:
            self.spans = SpanBuffer(self.stats, limit=0, batch_size=1)
        return self.spans

    def _export(self, snapshot: Snapshot) -> None:
        """Point the exporter at the snapshot's provider; with none, what is buffered still goes
        to the last one."""
        tracing = snapshot.telemetry.tracing
        if tracing is None or tracing.provider is None or self.spans is None:
            return
        if self.exporter is None:
            self.exporter = SpanExporter(self.spans, self.stats)
        router = any(listener.role == "gateway" for listener in snapshot.listeners)
        address = next((x.address for x in snapshot.listeners if x.role != "outbound"), "127.0.0.1")
        self.exporter.configure(tracing.provider, ProxyIdentity.of(snapshot.node, router, address))

    def _timers(self) -> TimerWheel:
        if self.timers is None:
            self.timers = TimerWheel(asyncio.get_running_loop())
        return self.timers

    def port(self, listener: str) -> int:
        """The bound port of a listener, by name."""
        return self.listeners[listener].port

    async def drain(self, timeout: float | None = None) -> None:
        """Stop accepting and finish requests in flight, within a bound; then close."""
        self.draining = True
        deadline = time.monotonic() + (
            timeout
            if timeout is not None
            else max([h.runtime.limits.drain_timeout for h in self.listeners.values()], default=0)
        )
        await asyncio.gather(*[h.drain(deadline) for h in self.listeners.values()])
        await self.tcp.drain(deadline)
        await self.close()

    async def close(self) -> None:
        """Close everything now."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self.health.close()
        if self.exporter is not None:
            await self.exporter.close()
        if self.jwks is not None:
            await self.jwks.close()
        for handle in self.listeners.values():
            if handle.server is not None:
                handle.server.close()
            for connection in list(handle.connections):
                connection.abort()
        for task in list(self._retiring):
            task.cancel()
        self.tcp.close()
        for cluster in self.clusters.values():
            for endpoint in cluster.endpoints:
                for upstream in list(endpoint.idle):
                    upstream.close()
        self.listeners = {}

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            for handle in list(self.listeners.values()):
                handle.sweep(now)
            for cluster in self.clusters.values():
                cluster.sweep(now)
            self.stats.gauges["gossamer_active_requests"] = self.active_requests
            self.stats.gauges["gossamer_downstream_connections"] = sum(
                len(h.connections) for h in self.listeners.values()
            )


def request_id_source() -> Iterator[bytes]:
    """Unique request ids: a random 64-bit prefix per proxy process and a counter."""
    prefix = b"%016x" % random.getrandbits(64)
    for number in itertools.count(1):
        yield b"%s-%x" % (prefix, number)
    raise AssertionError("unreachable")


def _check_mtls_listeners(snapshot: Snapshot, mesh_tls: MeshTls | None, identified: bool) -> None:
    """SnapshotError when a listener takes mTLS and the proxy has nothing to take it with."""
    for listener in snapshot.listeners:
        if listener.mtls is not None and accepts_tls(listener.mtls) and mesh_tls is None:
            missing = "trust anchors" if identified else "workload certificate"
            raise SnapshotError(
                f"listener {listener.name} takes mTLS, but the proxy has no {missing}"
            )


def _same_address(old: Listener, new: Listener) -> bool:
    # Port 0 in both means "any port": the one already bound is kept. A listener that gains or
    # loses TLS needs a new socket (and, on the same port, a drain first: a NACK says so).
    same_kind = (old.tls is None) == (new.tls is None) and (old.mtls is None) == (new.mtls is None)
    return (old.address, old.port) == (new.address, new.port) and same_kind


def _outbound_url(snapshot: Snapshot) -> str | None:
    """A sidecar's own outbound listener as an HTTP proxy URL; None for a gateway."""
    for listener in snapshot.listeners:
        if listener.role == "outbound":
            return f"http://{listener.address}:{listener.port}"
    return None
