"""A listener's state under one snapshot: its routes, the clusters, limits, stats and access log."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, TextIO

import msgspec

from gossamer.proxy.peer import HEADER as PEER_HEADER
from gossamer.proxy.peer import MAX_PEERS, header_value, source_labels
from gossamer.proxy.router import CompiledRoute, CompiledRouteTable
from gossamer.proxy.stats import ProxyStats, RequestSeries
from gossamer.proxy.timers import TimerWheel
from gossamer.proxy.tracing import Tracer
from gossamer.snapshot import Listener, ListenerLimits, Node, Rewrite, ServiceLabels, Telemetry

if TYPE_CHECKING:
    from gossamer.proxy.apiproduct import ProductGate
    from gossamer.proxy.cluster import ClusterState
    from gossamer.proxy.exchange import Exchange
    from gossamer.proxy.guard import RequestGuard


class ConnectionLimits:
    """A listener's limits (`ListenerLimits`) as attributes that compiled code reads directly;
    a snapshot struct's fields go through Python's attribute lookup, several per header."""

    __slots__ = (
        "drain_timeout",
        "header_timeout",
        "http2_connection_window",
        "http2_max_concurrent_streams",
        "http2_max_resets",
        "http2_reset_window",
        "http2_stream_window",
        "idle_timeout",
        "max_concurrent_requests",
        "max_connections",
        "max_header_bytes",
        "max_headers",
        "max_request_body_buffer",
        "max_request_line",
        "request_timeout",
    )

    def __init__(self, limits: ListenerLimits) -> None:
        self.max_request_line = limits.max_request_line
        self.max_header_bytes = limits.max_header_bytes
        self.max_headers = limits.max_headers
        self.header_timeout = limits.header_timeout
        self.idle_timeout = limits.idle_timeout
        self.request_timeout = limits.request_timeout
        self.max_connections = limits.max_connections
        self.max_concurrent_requests = limits.max_concurrent_requests
        self.max_request_body_buffer = limits.max_request_body_buffer
        self.drain_timeout = limits.drain_timeout
        self.http2_max_concurrent_streams = limits.http2_max_concurrent_streams
        self.http2_stream_window = limits.http2_stream_window
        self.http2_connection_window = limits.http2_connection_window
        self.http2_max_resets = limits.http2_max_resets
        self.http2_reset_window = limits.http2_reset_window


class ListenerRuntime:
    """What a connection of this listener uses; replaced whole when a snapshot changes it."""

    __slots__ = (
        "clusters",
        "draining",
        "drop_underscore_headers",
        "guard",
        "label_prefixes",
        "limits",
        "log",
        "node",
        "peer_field",
        "peer_line",
        "port",
        "products",
        "proto_line",
        "regexes",
        "request_ids",
        "role",
        "routes",
        "scheme",
        "series",
        "stats",
        "telemetry",
        "timers",
        "tracer",
        "version",
    )

    def __init__(
        self,
        listener: Listener,
        *,
        routes: CompiledRouteTable,
        clusters: dict[str, ClusterState],
        stats: ProxyStats,
        node: Node,
        telemetry: Telemetry,
        version: str,
        timers: TimerWheel,
        request_ids: Iterator[bytes],
        log: TextIO | None = None,
        guard: RequestGuard | None = None,
        tracer: Tracer | None = None,
        products: ProductGate | None = None,
    ) -> None:
        self.routes = routes
        self.products = products
        """API products a gateway listener enforces (apiproduct.py); None when there are none."""
        self.tracer = tracer
        """None when the snapshot has no tracing: trace headers are still continued."""
        self.guard = guard
        """mTLS per port, JWT and AuthorizationPolicy checks; None when there are none."""
        self.timers = timers
        self.request_ids = request_ids
        self.clusters = clusters
        self.stats = stats
        self.node = node
        self.telemetry = telemetry
        self.version = version
        self.role = listener.role
        self.port = listener.port
        # What x-forwarded-proto says for requests that arrive here.
        self.scheme = b"https" if listener.tls is not None else b"http"
        self.proto_line = b"x-forwarded-proto: " + self.scheme + b"\r\n"
        # Who this workload is, for the sidecars it calls (peer.py); inbound listeners say nothing.
        self.peer_field = (PEER_HEADER, header_value(node))
        """This workload's peer metadata as a header, for the sidecars it calls (peer.py)."""
        self.peer_line = (
            b"" if self.role == "inbound" else PEER_HEADER + b": " + self.peer_field[1] + b"\r\n"
        )
        self.limits = ConnectionLimits(listener.limits)
        self.drop_underscore_headers = listener.headers_with_underscores == "drop"
        self.draining = False
        self.label_prefixes: dict[tuple[str, str, bytes], tuple[str, ...]] = {}
        self.series: dict[tuple[str, str, bytes, int, str], RequestSeries] = {}
        """Each (cluster, peer, peer metadata, status, flags) seen, to its series: one lookup
        per request."""
        self.regexes: dict[str, re.Pattern[str]] = {}
        self.log = log if log is not None else (sys.stdout if telemetry.access_log else None)

    def next_request_id(self) -> bytes:
        """An x-request-id for a request that came without one."""
        return next(self.request_ids)

    def record(self, exchange: Exchange) -> None:
        """Count a finished request in the Istio metrics, and log it when the access log is on."""
        cluster = exchange.cluster
        cluster_name = cluster.name if cluster is not None else ""
        # The other side's SPIFFE id: the caller's on an inbound listener (from its certificate),
        # the upstream's on the others (the one its mTLS connection was checked against).
        if self.role == "inbound":
            peer = exchange.client.principal
            meta = exchange.peer_meta if peer else b""
        else:
            peer, meta = exchange.upstream_identity, b""
        key = (cluster_name, peer, meta, exchange.status, exchange.flags)
        series = self.series.get(key)
        if series is None:
            prefix = self.label_prefixes.get(key[:3])
            if prefix is None:
                labels = cluster.config.labels if cluster is not None else ServiceLabels()
                prefix = self.label_prefixes[key[:3]] = self._prefix(labels, peer, meta)
            labels_key = (*prefix, str(exchange.status), exchange.flags)
            series = self.series[key] = self.stats.series_for(labels_key)
        duration = (time.monotonic() - exchange.started) * 1000.0
        series.observe(duration, exchange.body_size, exchange.response_bytes)
        if self.tracer is not None:
            self.tracer.end(exchange, duration)
        tap = self.stats.tap
        if tap is not None:
            tap(self, exchange, duration)
        if self.log is not None:
            self._log(exchange, cluster_name, duration)

    def _prefix(self, labels: ServiceLabels, peer: str, meta: bytes) -> tuple[str, ...]:
        node = self.node
        me = (
            node.workload,
            node.namespace,
            f"spiffe://{node.cluster_domain}/ns/{node.namespace}/sa/{node.service_account}",
            node.service,
            node.version,
        )
        unknown = ("unknown",) * 5
        them = (labels.workload, labels.namespace, "unknown", labels.service_name, labels.version)
        if self.role == "inbound":
            source, destination, reporter = unknown, me, "destination"
            if peer:
                # What mTLS proved: the caller's principal, and the namespace in it; then what
                # the caller's sidecar said of its workload, if it names that namespace.
                namespace = peer.split("/ns/", 1)[1].split("/", 1)[0] if "/ns/" in peer else ""
                told = peer_source(meta, namespace, len(self.label_prefixes))
                workload, app, version = told or ("unknown", "unknown", "unknown")
                source = (workload, namespace or "unknown", peer, app, version)
            # Istio's full name of the service at both reporters (its short name beside it).
            host = (
                f"{node.service}.{node.namespace}.svc.{node.cluster_domain}"
                if node.service != "unknown"
                else "unknown"
            )
            service = (host, node.service, node.namespace)
        else:
            if peer:
                them = (
                    labels.workload,
                    labels.namespace,
                    peer,
                    labels.service_name,
                    labels.version,
                )
            source, destination, reporter = me, them, "source"
            service = (labels.service, labels.service_name, labels.namespace)
        return (
            reporter,
            *source,
            *destination,
            *service,
            "Kubernetes",
            "http",
            "mutual_tls" if peer else "none",
            "-",
        )

    def _log(self, exchange: Exchange, cluster: str, duration: float) -> None:
        assert self.log is not None
        head = exchange.head
        entry = {
            "start_time": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - duration / 1000.0)
            ),
            "method": head.method.decode("latin-1"),
            "path": exchange.path,
            "authority": exchange.authority,
            "protocol": f"HTTP/{head.version}",
            "response_code": exchange.status,
            "response_flags": exchange.flags,
            "reason": exchange.reason or None,
            "bytes_received": exchange.body_size,
            "bytes_sent": exchange.response_bytes,
            "duration_ms": round(duration, 3),
            "upstream_cluster": cluster or None,
            "upstream_host": _upstream_host(exchange),
            "attempts": exchange.retries + 1,
            "x_request_id": exchange.request_id.decode("latin-1") or None,
            "downstream_remote_address": exchange.client.peer,
            "route_name": exchange.route.route.name if exchange.route is not None else None,
            "downstream_peer_principal": exchange.client.principal or None,
            "authz_policy": exchange.policy or None,
            "api_consumer": getattr(exchange, "consumer", "") or None,
            "snapshot_version": self.version,
        }
        self.log.write(msgspec.json.encode(entry).decode() + "\n")
        self.log.flush()

    def rewrite(self, route: CompiledRoute, rewrite: Rewrite, target: bytes, path: str) -> bytes:
        """The request target after a route's prefix or regex rewrite (query kept)."""
        query = target[len(path.encode("latin-1")) :]
        if rewrite.regex is not None and rewrite.substitution is not None:
            pattern = self.regexes.get(rewrite.regex)
            if pattern is None:
                pattern = self.regexes[rewrite.regex] = re.compile(rewrite.regex)
            new_path = pattern.sub(rewrite.substitution, path)
        elif rewrite.prefix is not None:
            matched = route.route.match.path
            old = matched.value if matched is not None and matched.kind != "regex" else ""
            new_path = rewrite.prefix + path[len(old) :] if path.startswith(old) else path
            new_path = new_path.replace("//", "/") if new_path.startswith("//") else new_path
        else:
            return target
        return new_path.encode("latin-1") + query


def _upstream_host(exchange: Exchange) -> str | None:
    """The endpoint the last try went to, as Envoy's %UPSTREAM_HOST%."""
    current = exchange.current
    endpoint = current.endpoint if current is not None else exchange.last_endpoint
    if endpoint is None:
        return None
    return f"{endpoint.address}:{endpoint.port}"


def peer_source(meta: bytes, namespace: str, known: int) -> tuple[str, str, str] | None:
    """The caller's (workload, app, version) from its sidecar's metadata, unless this listener
    already keeps `MAX_PEERS` label sets."""
    if not meta or not namespace or known >= MAX_PEERS:
        return None
    return source_labels(meta, namespace)
