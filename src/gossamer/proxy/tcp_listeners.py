"""Opaque TCP listeners: bound, swapped with each snapshot, drained when removed.

A snapshot's listeners with `tcp` set are run here rather than by the HTTP listeners of
server.py: the proxy calls `prepare` while it binds its HTTP listeners (a bind error rejects
the whole snapshot), `commit` once nothing can fail, and `drain`/`close` as it stops. A kept
listener keeps its socket and its connections; new connections use the new `TcpRuntime`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from gossamer.proxy.mtls import MeshAcceptor
from gossamer.proxy.sockets import serve
from gossamer.proxy.tcp_proxy import TcpConnection, weighted_choice
from gossamer.proxy.tcp_stats import TcpSeries, tcp_labels
from gossamer.security.authz import Authorizer
from gossamer.security.authz_tcp import tcp_policies
from gossamer.snapshot import Listener, Snapshot

if TYPE_CHECKING:
    from gossamer.proxy.cluster import ClusterState
    from gossamer.proxy.server import Proxy
    from gossamer.proxy.stats import ProxyStats


def tcp_listeners(snapshot: Snapshot) -> list[Listener]:
    """The snapshot's opaque TCP listeners."""
    return [listener for listener in snapshot.listeners if listener.tcp is not None]


def http_listeners(snapshot: Snapshot) -> list[Listener]:
    """The snapshot's other listeners, which speak HTTP."""
    return [listener for listener in snapshot.listeners if listener.tcp is None]


class TcpRuntime:
    """What a TCP listener's new connections use under one snapshot."""

    __slots__ = (
        "authorizer",
        "clusters",
        "connect_attempts",
        "destination_port",
        "inbound",
        "log",
        "mtls",
        "name",
        "node",
        "series_by_key",
        "sni",
        "stats",
        "targets",
        "version",
        "weights",
    )

    def __init__(
        self,
        listener: Listener,
        snapshot: Snapshot,
        clusters: dict[str, ClusterState],
        stats: ProxyStats,
    ) -> None:
        route = listener.tcp
        assert route is not None, "only TCP listeners have a TcpRuntime"
        self.name = listener.name
        self.stats = stats
        self.node = snapshot.node
        self.inbound = listener.role == "inbound"
        self.mtls = listener.mtls
        self.destination_port = route.destination_port or listener.port
        self.connect_attempts = route.connect_attempts
        self.clusters = clusters
        self.targets = [target.cluster for target in route.clusters]
        self.weights = [target.weight for target in route.clusters]
        self.sni = [
            (sni.hosts, [t.cluster for t in sni.clusters], [t.weight for t in sni.clusters])
            for sni in route.sni
        ]
        """Routes by the ClientHello's server name (TLS passthrough); empty: none."""
        policies = snapshot.security.authorization
        # As HTTP: outbound listeners enforce nothing; the destination's sidecar decides.
        self.authorizer = (
            Authorizer(tcp_policies(policies)) if policies and listener.role != "outbound" else None
        )
        self.series_by_key: dict[tuple[str, str, str], TcpSeries] = {}
        self.log: TextIO | None = sys.stdout if snapshot.telemetry.access_log else None
        """Where each connection's access log line goes when it ends (the HTTP log's place)."""
        self.version = snapshot.version

    def __repr__(self) -> str:
        return f"<TcpRuntime {self.name} -> {', '.join(self.targets)}>"

    def pick_cluster(self, server_name: str | None = None) -> ClusterState | None:
        """The cluster for a new connection, by the weights of its route: the one for the
        ClientHello's `server_name` when the listener routes by SNI, else the listener's."""
        targets, weights = self.targets, self.weights
        if server_name is not None:
            for hosts, sni_targets, sni_weights in self.sni:
                if any(_names(pattern, server_name) for pattern in hosts):
                    targets, weights = sni_targets, sni_weights
                    break
        if not targets:
            return None
        if len(targets) == 1:
            return self.clusters.get(targets[0])
        return self.clusters.get(targets[weighted_choice(weights)])

    def series(self, cluster: ClusterState, peer: str, flags: str) -> TcpSeries:
        """The metric names of a connection to `cluster` with this peer and outcome."""
        key = (cluster.name, peer, flags)
        found = self.series_by_key.get(key)
        if found is None:
            labels = tcp_labels(
                inbound=self.inbound,
                node=self.node,
                destination=cluster.config.labels,
                peer=peer,
                flags=flags,
            )
            found = self.series_by_key[key] = TcpSeries(labels)
        return found


class TcpListenerHandle:
    """A bound TCP listener and its connections; its runtime is swapped by each snapshot."""

    def __init__(self, proxy: Proxy, config: Listener, runtime: TcpRuntime) -> None:
        self.proxy = proxy
        self.config = config
        self.runtime = runtime
        self.server: asyncio.Server | MeshAcceptor | None = None
        self.connections: set[TcpConnection] = set()
        self.max_connections = config.limits.max_connections

    def __repr__(self) -> str:
        return f"<TcpListener {self.config.name} :{self.port}, {len(self.connections)} open>"

    @property
    def port(self) -> int:
        """The bound port (when the snapshot asked for port 0, the one the system chose)."""
        server: Any = self.server
        if server is None or not server.sockets:
            return self.config.port
        return int(server.sockets[0].getsockname()[1])

    async def bind(self) -> None:
        """Start accepting (TLS and plaintext told apart by the first byte when mTLS is on)."""
        factory: Callable[[], asyncio.Protocol] = lambda: TcpConnection(self)  # noqa: E731
        if self.config.mtls is not None:
            self.server = await MeshAcceptor.start(self, factory)
            return
        self.server = await serve(factory, self.config.address, self.config.port)

    def admit(self, connection: TcpConnection) -> bool:
        """Track a new connection, unless the listener is at max_connections."""
        if len(self.connections) >= self.max_connections:
            return False
        self.connections.add(connection)
        return True

    def forget(self, connection: TcpConnection) -> None:
        """A connection closed."""
        self.connections.discard(connection)

    async def drain(self, deadline: float) -> None:
        """Stop accepting; connections may finish until `deadline`, then are dropped."""
        if self.server is not None:
            self.server.close()
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.close()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1.0)

    def close(self) -> None:
        """Stop accepting and drop every connection now."""
        if self.server is not None:
            self.server.close()
        for connection in list(self.connections):
            connection.abort()
        self.connections.clear()


@dataclass(slots=True)
class TcpPlan:
    """A snapshot's TCP listeners, bound but not yet serving it."""

    kept: dict[str, tuple[TcpListenerHandle, Listener, TcpRuntime]] = field(default_factory=dict)
    fresh: list[TcpListenerHandle] = field(default_factory=list)


class TcpListeners:
    """Every opaque TCP listener of one proxy."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.handles: dict[str, TcpListenerHandle] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<TcpListeners {len(self.handles)}>"

    async def prepare(self, snapshot: Snapshot, clusters: dict[str, ClusterState]) -> TcpPlan:
        """Bind the listeners the snapshot adds; on an error, nothing stays bound."""
        plan = TcpPlan()
        try:
            for listener in tcp_listeners(snapshot):
                runtime = TcpRuntime(listener, snapshot, clusters, self.proxy.stats)
                handle = self.handles.get(listener.name)
                if handle is not None and _same_socket(handle.config, listener):
                    plan.kept[listener.name] = (handle, listener, runtime)
                    continue
                handle = TcpListenerHandle(self.proxy, listener, runtime)
                plan.fresh.append(handle)
                await handle.bind()
        except BaseException:
            self.abandon(plan)
            raise
        return plan

    def abandon(self, plan: TcpPlan) -> None:
        """The snapshot was rejected: unbind what `prepare` bound."""
        for handle in plan.fresh:
            if handle.server is not None:
                handle.server.close()

    def commit(self, plan: TcpPlan) -> None:
        """Serve the prepared snapshot: swap runtimes, drain the listeners it removed."""
        for handle, listener, runtime in plan.kept.values():
            handle.config = listener
            handle.runtime = runtime
            handle.max_connections = listener.limits.max_connections
        names = {*plan.kept, *(handle.config.name for handle in plan.fresh)}
        removed = [handle for name, handle in self.handles.items() if name not in names]
        self.handles = {name: entry[0] for name, entry in plan.kept.items()}
        self.handles.update({handle.config.name: handle for handle in plan.fresh})
        loop = asyncio.get_running_loop()
        for handle in removed:
            deadline = time.monotonic() + handle.config.limits.drain_timeout
            task = loop.create_task(handle.drain(deadline))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    def port(self, name: str) -> int:
        """The bound port of a TCP listener, by name."""
        return self.handles[name].port

    async def drain(self, deadline: float) -> None:
        """Stop accepting everywhere; connections may finish until `deadline`."""
        await asyncio.gather(*(handle.drain(deadline) for handle in self.handles.values()))

    def close(self) -> None:
        """Drop everything now."""
        for handle in self.handles.values():
            handle.close()
        for task in list(self._retiring):
            task.cancel()
        self.handles = {}

    def connections(self) -> Iterable[TcpConnection]:
        """Every open connection (for the proxy's gauges and tests)."""
        for handle in self.handles.values():
            yield from handle.connections


def _names(pattern: str, server_name: str) -> bool:
    """Whether an SNI route's host covers a server name: `*`, `*.suffix` (one or more labels)
    or the name itself."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return server_name.endswith(pattern[1:]) and len(server_name) > len(pattern) - 1
    return pattern == server_name


def _same_socket(old: Listener, new: Listener) -> bool:
    return (old.address, old.port) == (new.address, new.port) and (old.mtls is None) == (
        new.mtls is None
    )
