"""Istio's TCP metrics of opaque connections: opened, closed, bytes sent and received.

Each series is a proxy counter whose name carries its labels (`ProxyStats.incr`), so the
Prometheus page lists them with the proxy's other counters. The labels are Istio's: the same
source, destination and service labels as `istio_requests_total`, with `request_protocol="tcp"`,
the connection's `response_flags` and its `connection_security_policy`. A connection's four
names are built once, when its upstream outcome is known.

At the destination the source is what mTLS proved: its principal and the namespace in it; the
source workload, app and version are `unknown` (HTTP learns them from a header the caller's
sidecar adds; a byte stream has no room for one).
"""

from __future__ import annotations

from gossamer.snapshot.model import Node, ServiceLabels

OPENED = "istio_tcp_connections_opened_total"
CLOSED = "istio_tcp_connections_closed_total"
SENT = "istio_tcp_sent_bytes_total"
"""Bytes the proxy sent to the downstream client (what the upstream answered)."""
RECEIVED = "istio_tcp_received_bytes_total"
"""Bytes the proxy received from the downstream client."""
NO_FLAGS = "-"
UNKNOWN = "unknown"


class TcpSeries:
    """The four counter names of one label set."""

    __slots__ = ("closed", "opened", "received", "sent")

    def __init__(self, labels: str) -> None:
        self.opened = f"{OPENED}{{{labels}}}"
        self.closed = f"{CLOSED}{{{labels}}}"
        self.sent = f"{SENT}{{{labels}}}"
        self.received = f"{RECEIVED}{{{labels}}}"


def tcp_labels(
    *,
    inbound: bool,
    node: Node,
    destination: ServiceLabels,
    peer: str,
    flags: str,
) -> str:
    """The label text of a connection: `inbound` at the destination's sidecar (the peer is the
    caller), else at the source (the peer is the upstream it called over mTLS, or "")."""
    me = (
        node.workload,
        node.namespace,
        f"spiffe://{node.cluster_domain}/ns/{node.namespace}/sa/{node.service_account}",
        node.service,
        node.version,
    )
    if inbound:
        namespace = peer.split("/ns/", 1)[1].split("/", 1)[0] if "/ns/" in peer else UNKNOWN
        source = (UNKNOWN, namespace, peer or UNKNOWN, UNKNOWN, UNKNOWN)
        target = me
        host = (
            f"{node.service}.{node.namespace}.svc.{node.cluster_domain}"
            if node.service != UNKNOWN
            else UNKNOWN
        )
        service = (host, node.service, node.namespace)
        reporter = "destination"
    else:
        source = me
        target = (
            destination.workload,
            destination.namespace,
            peer or UNKNOWN,
            destination.service_name,
            destination.version,
        )
        service = (destination.service, destination.service_name, destination.namespace)
        reporter = "source"
    values = (
        ("reporter", reporter),
        *zip(_side_labels("source"), source, strict=True),
        *zip(_side_labels("destination"), target, strict=True),
        ("destination_service", service[0]),
        ("destination_service_name", service[1]),
        ("destination_service_namespace", service[2]),
        ("destination_cluster", "Kubernetes"),
        ("request_protocol", "tcp"),
        ("response_flags", flags),
        ("connection_security_policy", "mutual_tls" if peer else "none"),
    )
    return ",".join(f'{name}="{_escape(value)}"' for name, value in values)


def _side_labels(side: str) -> tuple[str, ...]:
    return (
        f"{side}_workload",
        f"{side}_workload_namespace",
        f"{side}_principal",
        f"{side}_app",
        f"{side}_version",
    )


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
