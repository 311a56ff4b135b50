"""One opaque TCP connection: checked, connected upstream at once, then bytes both ways.

The upstream connection is opened as soon as the client's is accepted, before any byte is
read from the client, so protocols where the server speaks first (PostgreSQL, MySQL, SMTP)
work. Until it is up the client is not read, so nothing is buffered; a connect failure (refused,
timed out, an mTLS peer that is not who the endpoint says) is tried again on another endpoint,
up to the route's `connect_attempts`, and each failure counts towards the endpoint's outlier
detection. With no endpoint, at the cluster's `max_connections`, or out of attempts, the
client's connection is closed: a byte stream has no room for an error message.

Once connected, what each side sends is written to the other, with backpressure (a side whose
write buffer passes the high-water mark stops the other side's reads until it drains to half).
A half-close is passed on where the other side can take it (plain TCP). A TLS side has none:
its end closes the connection once what is in flight is written, and after the client's end
towards a TLS upstream (between proxies) the upstream's answer still flows back until it has
been silent for HALF_CLOSED_IDLE. A connection idle for its cluster's `tcp_idle_timeout` (Istio's
`connectionPool.tcp.idleTimeout`) is closed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, cast

import msgspec

from gossamer.proxy.mtls import MeshIdentityError, port_mode
from gossamer.proxy.sni import read_sni
from gossamer.proxy.tcp_stats import NO_FLAGS, TcpSeries
from gossamer.security.authz import AuthzRequest
from gossamer.security.spiffe import peer_spiffe_id

if TYPE_CHECKING:
    from gossamer.proxy.cluster import ClusterState, EndpointState
    from gossamer.proxy.mtls import MeshTls
    from gossamer.proxy.tcp_listeners import TcpListenerHandle, TcpRuntime

log = logging.getLogger(__name__)

HIGH_WATER = 256 * 1024
"""Bytes a side may have waiting to be written before the other side's reads pause."""
HALF_CLOSED_IDLE = 5.0
"""Seconds of silence after which a client's end, which a TLS upstream cannot be told of,
closes the connection."""
MTLS_REFUSED = "MTLS"
RBAC_DENIED = "RBAC"
NO_ALLOW_MATCHED = "(no ALLOW policy matched)"
NO_HEALTHY_UPSTREAM = "UH"
NO_ROUTE = "NR"
SNI_TIMEOUT = 10.0
"""Seconds a passthrough listener waits for a whole ClientHello."""
UPSTREAM_OVERFLOW = "UO"
UPSTREAM_CONNECT_FAILURE = "UF"


class TcpConnection(asyncio.Protocol):
    """The client's side of an opaque TCP connection, and the pipe to its upstream."""

    __slots__ = (
        "client",
        "client_ended",
        "closed",
        "cluster",
        "connecting",
        "early",
        "early_size",
        "end_held",
        "endpoint",
        "flags",
        "handle",
        "idle_timeout",
        "last_activity",
        "peer",
        "policy",
        "principal",
        "received",
        "runtime",
        "secure",
        "sent",
        "series",
        "server_name",
        "started",
        "timer",
        "upstream",
    )

    def __init__(self, handle: TcpListenerHandle) -> None:
        self.handle = handle
        self.runtime: TcpRuntime = handle.runtime
        self.client: asyncio.Transport | None = None
        self.upstream: UpstreamSide | None = None
        self.cluster: ClusterState | None = None
        self.endpoint: EndpointState | None = None
        self.series: TcpSeries | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.early: list[bytes] = []
        self.early_size = 0
        self.peer = ""
        self.principal = ""
        self.secure = False
        self.client_ended = False
        self.end_held = False
        """The client's end could not be passed on (a TLS upstream): silence ends it sooner."""
        self.closed = False
        self.idle_timeout = 0.0
        self.started = self.last_activity = time.monotonic()
        self.flags = NO_FLAGS
        self.policy = ""
        self.received = 0
        self.sent = 0
        self.server_name = ""

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("piping" if self.upstream else "connecting")
        return f"<TcpConnection {self.peer} {state}>"

    # The client's side.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Check the client, then connect upstream without waiting for its first byte."""
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        transport = cast(asyncio.Transport, transport)
        self.client = transport
        transport.pause_reading()
        transport.set_write_buffer_limits(high=HIGH_WATER, low=HIGH_WATER // 2)
        address = transport.get_extra_info("peername")
        self.peer = str(address[0]) if address else ""
        stats = self.runtime.stats
        if not self.handle.admit(self):
            stats.incr("gossamer_downstream_connections_refused_total")
            self._close()
            return
        if not self._admitted(transport):
            self._close()
            return
        loop = asyncio.get_running_loop()
        if self.runtime.sni:
            # TLS passthrough: the ClientHello's server name picks the route.
            self.timer = loop.call_later(SNI_TIMEOUT, self._no_hello)
            return
        self.connecting = loop.create_task(self._connect(self.runtime.pick_cluster()))

    def _admitted(self, transport: asyncio.Transport) -> bool:
        """The peer's mTLS identity, the port's mTLS mode, then AuthorizationPolicy."""
        runtime = self.runtime
        stats = runtime.stats
        if transport.get_extra_info("sslcontext") is not None:
            self.secure = True
            self.principal = peer_spiffe_id(transport.get_extra_info("peercert"))
            mesh_tls = self.handle.proxy.mesh_tls
            if mesh_tls is None or not mesh_tls.trusts(self.principal):
                self.flags = MTLS_REFUSED
                stats.incr("gossamer_mtls_refused_total")
                log.info("refused mTLS peer %r from %s", self.principal, self.peer)
                return False
        mtls = runtime.mtls
        if (
            mtls is not None
            and not self.secure
            and port_mode(mtls, runtime.destination_port) == "STRICT"
        ):
            self.flags = MTLS_REFUSED
            stats.incr("gossamer_mtls_plaintext_refused_total")
            return False
        authorizer = runtime.authorizer
        if authorizer is None:
            return True
        local = transport.get_extra_info("sockname")
        decision = authorizer.check(
            AuthzRequest(
                method="",
                path="",
                host="",
                port=runtime.destination_port,
                source_principal=self.principal.removeprefix("spiffe://"),
                source_ip=self.peer,
                destination_ip=str(local[0]) if local else "",
            )
        )
        if not decision.allowed:
            self.flags = RBAC_DENIED
            self.policy = decision.policy or NO_ALLOW_MATCHED
            stats.incr(f'gossamer_tcp_denied_total{{listener="{runtime.name}"}}')
            log.info(
                "tcp connection from %s (%s) to %s denied by %s",
                self.peer,
                self.principal or "plaintext",
                runtime.name,
                self.policy,
            )
            return False
        return True

    def data_received(self, data: bytes) -> None:
        """Bytes from the client: on to the upstream, or held (bounded) until it is up."""
        self.last_activity = time.monotonic()
        upstream = self.upstream
        if upstream is None:
            # uvloop starts reading after connection_made, whatever it paused there.
            self.early.append(data)
            self.early_size += len(data)
            if self.early_size > HIGH_WATER and self.client is not None:
                self.client.pause_reading()
            if self.connecting is None and self.runtime.sni and not self.closed:
                self._route_by_sni()
            return
        self.received += len(data)
        series = self.series
        if series is not None:
            self.runtime.stats.incr(series.received, len(data))
        if not upstream.transport.is_closing():
            upstream.transport.write(data)

    def eof_received(self) -> bool:
        """The client stopped sending: pass it on where the upstream can take a half-close."""
        self.client_ended = True
        if self.connecting is None and self.runtime.sni:
            self._close()  # it ended before its ClientHello was complete
            return False
        if self.upstream is None and not self.closed:
            # Passed on once connected; a TLS client has no half-close to keep open.
            return self.client is not None and self.client.can_write_eof()
        return self._client_eof()

    def _client_eof(self) -> bool:
        upstream, client = self.upstream, self.client
        if upstream is None or client is None or upstream.eof or not client.can_write_eof():
            self._close()
            return False
        if upstream.transport.can_write_eof():
            if not upstream.transport.is_closing():
                upstream.transport.write_eof()
            return True
        # A TLS upstream cannot be told. The client may still wait for an answer (as after
        # `nc`'s half-close), or may be gone (a full close looks the same): the answer is
        # passed on while it flows, and HALF_CLOSED_IDLE of silence ends the connection.
        self.end_held = True
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(HALF_CLOSED_IDLE, self._check_idle)
        return True

    def pause_writing(self) -> None:
        """The client reads slowly: stop reading the upstream."""
        if self.upstream is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        """The client caught up: read the upstream again."""
        if self.upstream is not None and not self.upstream.eof:
            self.upstream.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        """The client is gone: close the upstream (after it flushes) and count the end; a dial
        still on its way is given up."""
        self.handle.forget(self)
        self._close()
        self._stop_dialling()

    def _stop_dialling(self) -> None:
        connecting = self.connecting
        if connecting is not None and not connecting.done():
            connecting.cancel()

    # The upstream's side.

    def _route_by_sni(self) -> None:
        """Once the ClientHello is in, dial the route its server name picks."""
        found = read_sni(b"".join(self.early))
        if found.more:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not found.tls:
            self.runtime.stats.incr("gossamer_tcp_not_tls_total")
            self.flags = NO_ROUTE
            self._close()
            return
        self.server_name = found.server_name
        cluster = self.runtime.pick_cluster(found.server_name)
        if cluster is None:
            self.runtime.stats.incr("gossamer_tcp_no_sni_route_total")
            self.flags = NO_ROUTE
            self._close()
            return
        self.connecting = asyncio.get_running_loop().create_task(self._connect(cluster))

    def _no_hello(self) -> None:
        self.timer = None
        if self.connecting is None:
            self.runtime.stats.incr("gossamer_tcp_sni_timeouts_total")
            self.flags = NO_ROUTE
            self._close()

    async def _connect(self, cluster: ClusterState | None) -> None:
        runtime = self.runtime
        endpoint = cluster.pick() if cluster is not None else None
        attempts = 0
        while True:
            if cluster is None or endpoint is None:
                self._fail(cluster, NO_HEALTHY_UPSTREAM)
                return
            if not cluster.take_slot(endpoint):
                runtime.stats.incr(f'gossamer_upstream_overflow_total{{cluster="{cluster.name}"}}')
                self._fail(cluster, UPSTREAM_OVERFLOW)
                return
            cluster.try_started(endpoint)
            attempts += 1
            try:
                upstream = await _open(self, endpoint, cluster.limits.connect_timeout, cluster)
            except asyncio.CancelledError:
                # The client left (or the proxy closes) while the dial was on its way.
                cluster.free_slot(endpoint)
                cluster.try_ended(endpoint, 0.0, record=False)
                raise
            except (OSError, TimeoutError, MeshIdentityError) as error:
                cluster.free_slot(endpoint)
                cluster.try_ended(endpoint, 0.0, record=True, gateway_error=True)
                runtime.stats.incr(
                    f'gossamer_upstream_connect_failures_total{{cluster="{cluster.name}"}}'
                )
                log.info("tcp connect to %s:%s failed: %s", endpoint.address, endpoint.port, error)
                if attempts >= runtime.connect_attempts or self.closed:
                    self._fail(cluster, UPSTREAM_CONNECT_FAILURE)
                    return
                endpoint = cluster.pick_other(endpoint)
                continue
            if self.closed:
                # The client left while we connected.
                upstream.transport.close()
                cluster.free_slot(endpoint)
                cluster.try_ended(endpoint, 0.0, record=False)
                return
            self._piped(cluster, endpoint, upstream)
            return

    def _piped(
        self, cluster: ClusterState, endpoint: EndpointState, upstream: UpstreamSide
    ) -> None:
        """Connected: count the connection open and start reading the client."""
        self.cluster = cluster
        self.endpoint = endpoint
        self.upstream = upstream
        cluster.try_ended(endpoint, 0.0, record=True, status=200)
        # Counted in `active` while it lasts, for LEAST_REQUEST balancing by connections.
        cluster.try_started(endpoint)
        self.series = self.runtime.series(cluster, self.principal or upstream.identity, NO_FLAGS)
        self.runtime.stats.incr(self.series.opened)
        self.last_activity = time.monotonic()
        loop = asyncio.get_running_loop()
        self.idle_timeout = cluster.limits.tcp_idle_timeout
        self.timer = loop.call_later(self.idle_timeout, self._check_idle)
        upstream.piped = True
        said, upstream.early = upstream.early, []
        for data in said:
            self.upstream_data(data)
        early, self.early, self.early_size = self.early, [], 0
        for data in early:
            self.data_received(data)
        if upstream.lost:
            self._close()
            return
        if upstream.eof and not self.upstream_eof():
            return
        client = self.client
        assert client is not None
        if self.client_ended:
            self._client_eof()
        elif not client.is_closing():
            client.resume_reading()

    def _fail(self, cluster: ClusterState | None, flags: str) -> None:
        """No upstream: count the connection opened and closed with why, then close it."""
        self.flags = flags
        self.cluster = cluster
        if cluster is not None:
            series = self.runtime.series(cluster, self.principal, flags)
            stats = self.runtime.stats
            stats.incr(series.opened)
            stats.incr(series.closed)
        self._close()

    def upstream_data(self, data: bytes) -> None:
        """Bytes from the upstream: on to the client."""
        self.last_activity = time.monotonic()
        self.sent += len(data)
        series = self.series
        if series is not None:
            self.runtime.stats.incr(series.sent, len(data))
        client = self.client
        if client is not None and not client.is_closing():
            client.write(data)

    def upstream_eof(self) -> bool:
        """The upstream stopped sending: a half-close for a plain client, else the end."""
        client, upstream = self.client, self.upstream
        if (
            client is None
            or upstream is None
            or self.client_ended
            or client.is_closing()
            or not client.can_write_eof()
            or not upstream.transport.can_write_eof()
        ):
            self._close()
            return False
        client.write_eof()
        return True

    def upstream_lost(self) -> None:
        """The upstream connection is gone: close the client's after it flushes."""
        self._close()

    # Ending.

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.client is not None:
            self.client.close()
        upstream = self.upstream
        if upstream is not None:
            upstream.transport.close()
            cluster, endpoint = self.cluster, self.endpoint
            assert cluster is not None and endpoint is not None
            cluster.free_slot(endpoint)
            cluster.try_ended(endpoint, 0.0, record=False)
        if self.series is not None:
            self.runtime.stats.incr(self.series.closed)
        log = self.runtime.log
        if log is not None:
            log.write(msgspec.json.encode(_log_entry(self)).decode() + "\n")
            log.flush()

    def abort(self) -> None:
        """Drop both sides now (drain deadline passed, or the proxy closes)."""
        client, upstream = self.client, self.upstream
        self._close()
        self._stop_dialling()
        if client is not None:
            client.abort()
        if upstream is not None:
            upstream.transport.abort()

    def _check_idle(self) -> None:
        idle = time.monotonic() - self.last_activity
        limit = HALF_CLOSED_IDLE if self.end_held else self.idle_timeout
        if idle < limit:
            self.timer = asyncio.get_running_loop().call_later(limit - idle, self._check_idle)
            return
        self.timer = None
        self.runtime.stats.incr("gossamer_tcp_idle_timeouts_total")
        self.abort()


class UpstreamSide(asyncio.Protocol):
    """The upstream's side of a TcpConnection: what it reads goes to the client.

    Until the connection takes it (`piped`, once its peer is checked), what it reads is held,
    and its end or loss is only noted: a side that fails the identity check never reaches the
    client.
    """

    __slots__ = ("connection", "early", "eof", "identity", "lost", "piped", "transport")

    def __init__(self, connection: TcpConnection) -> None:
        self.connection = connection
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.eof = False
        self.lost = False
        self.piped = False
        self.early: list[bytes] = []
        self.identity = ""
        """The upstream's SPIFFE id when reached over mTLS (checked against its endpoint)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Connected (the client is read once the connection is checked)."""
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER, low=HIGH_WATER // 2)

    def data_received(self, data: bytes) -> None:
        """Bytes from the upstream."""
        if self.piped:
            self.connection.upstream_data(data)
        else:
            self.early.append(data)

    def eof_received(self) -> bool:
        """The upstream stopped sending."""
        self.eof = True
        return self.connection.upstream_eof() if self.piped else True

    def pause_writing(self) -> None:
        """The upstream reads slowly: stop reading the client."""
        client = self.connection.client
        if client is not None:
            client.pause_reading()

    def resume_writing(self) -> None:
        """The upstream caught up: read the client again."""
        connection = self.connection
        if connection.client is not None and not connection.client_ended:
            connection.client.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        """The upstream connection is gone."""
        self.lost = True
        if self.piped:
            self.connection.upstream_lost()


async def _open(
    connection: TcpConnection, endpoint: EndpointState, timeout: float, cluster: ClusterState
) -> UpstreamSide:
    """Connect to an endpoint within `timeout`, over mTLS when it names an identity."""
    loop = asyncio.get_running_loop()
    identity = endpoint.identity
    mesh_tls: MeshTls | None = cluster.mesh_tls
    if identity and mesh_tls is None:
        raise MeshIdentityError("no workload certificate to call a mesh endpoint with mTLS")
    async with asyncio.timeout(timeout):
        transport, side = await loop.create_connection(
            lambda: UpstreamSide(connection),
            endpoint.address,
            endpoint.port,
            ssl=mesh_tls.client if identity and mesh_tls is not None else None,
            server_hostname="" if identity else None,
        )
    if identity:
        peer = peer_spiffe_id(transport.get_extra_info("peercert"))
        if peer != identity:
            transport.abort()
            raise MeshIdentityError(f"upstream is {peer or 'anonymous'}, expected {identity}")
        side.identity = peer
    return side


def _log_entry(connection: TcpConnection) -> dict[str, object]:
    """A connection's access log line, in the fields of the HTTP log that apply to it."""
    duration = time.monotonic() - connection.started
    cluster, endpoint = connection.cluster, connection.endpoint
    return {
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - duration)),
        "protocol": "TCP",
        "listener": connection.runtime.name,
        "requested_server_name": connection.server_name or None,
        "response_flags": connection.flags,
        "bytes_received": connection.received,
        "bytes_sent": connection.sent,
        "duration_ms": round(duration * 1000.0, 3),
        "upstream_cluster": cluster.name if cluster is not None else None,
        "upstream_host": f"{endpoint.address}:{endpoint.port}" if endpoint is not None else None,
        "downstream_remote_address": connection.peer,
        "downstream_peer_principal": connection.principal or None,
        "authz_policy": connection.policy or None,
        "snapshot_version": connection.runtime.version,
    }


def weighted_choice(weights: list[int]) -> int:
    """The index of one weight, picked in proportion to it."""
    total = sum(weights)
    point = random.uniform(0, total)
    for index, weight in enumerate(weights):
        point -= weight
        if point < 0:
            return index
    return len(weights) - 1
