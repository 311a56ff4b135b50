"""The config stream between a proxy and the control plane: messages, and applying an update.

One long-lived WebSocket per proxy. The proxy says who it is (`Hello`); the control plane answers
`Welcome`, then sends `Update`s. An update is either whole (`base` empty) or a delta against the
version the proxy last applied: clusters and virtual hosts by name, upserted or removed, and
the node, listeners and telemetry when they change. The proxy answers every update with an
`Ack` (empty `error`) or a NACK (the error), and keeps running its last good snapshot after a
NACK. `Health` reports whether the proxy's workload is ready to take traffic.

Identity: the proxy makes its key itself and sends only a certificate signing request, in the
`Hello` and again in a `Renew` at half of the certificate's life; the control plane checks the
request against the workload the stream's token speaks for and answers with the signed chain
(in the `Welcome`, then in an `Issued`). Private keys never cross the stream.

Deltas matter at scale: one VirtualService change touches one virtual host, and a thousand
proxies should receive a few hundred bytes each, not their whole configuration.

A message larger than `PIECE_BYTES` (a whole update of a large mesh is megabytes) goes in
pieces, each a WebSocket message of its own: `+` then bytes for every piece but the last, `.`
then bytes for the last. A TLS connection's buffers grow to the largest write they are given
and keep that size, so one write of the whole would cost its size in memory per proxy for as
long as the stream lasts; pieces cost one piece.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterable, Mapping
from typing import TypeVar

import msgspec
from msgspec import Struct

from gossamer.snapshot.codec import SnapshotError, check
from gossamer.snapshot.model import (
    Cluster,
    Listener,
    Node,
    RouteTable,
    Security,
    Snapshot,
    Telemetry,
    VirtualHost,
)

_Named = TypeVar("_Named", Cluster, VirtualHost)

PATH = "/mesh/v1/stream"
"""Where the control plane accepts proxy streams."""

SUBPROTOCOL = "gossamer.mesh.v1"

PIECE_BYTES = 64 * 1024
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_MORE, _LAST = b"+", b"."


class Instance(Struct, frozen=True):
    """Where the proxy's workload instance takes traffic, for the registry."""

    address: str
    port: int
    """The sidecar's inbound port: every HTTP service port of the workload arrives here."""
    zone: str = ""
    ports: tuple[tuple[str, int], ...] = ()
    """(Service port name, sidecar port) of each opaque TCP port: the WorkloadEntry's `ports`."""


class Hello(Struct, frozen=True, tag="hello"):
    """First message of a stream: which workload this proxy serves, and how it listens."""

    workload: str
    namespace: str = "default"
    role: str = "sidecar"
    """`sidecar`, `gateway`, or `vip` (the proxy behind every Service's virtual IP)."""
    vip_network: str = "127.77.0.0/16"
    """Where Services' virtual IPs are (role `vip`)."""
    instance: Instance | None = None
    """Where the workload takes traffic; registered as an endpoint of its Services."""
    address: str = "127.0.0.1"
    """Where the inbound (or gateway) listener binds; the outbound one is always on loopback."""
    outbound_port: int = 15001
    inbound_port: int = 15006
    gateway_port: int = 8080
    gateway_https_port: int = 0
    gateway_passthrough_port: int = 0
    """Where a gateway routes PASSTHROUGH TLS by SNI; 0: no such listener."""
    """Where a gateway serves Ingress `tls` hosts; 0: no TLS listener."""
    secrets_dir: str = ""
    """Where a gateway reads Ingress TLS secrets (SECRETS_DIR/NAME/tls.crt, tls.key)."""
    app_port: int = 0
    """Where the app listens on loopback, for every service port; 0: each port's targetPort."""
    tcp_ports: tuple[tuple[str, int], ...] = ()
    """(Service port name, port) where the sidecar takes each opaque TCP port of its workload."""
    version: str = ""
    """The version the proxy runs (after a reconnect), so that the first update can be a delta."""
    name: str = ""
    """A stable name for this proxy (e.g. host and pid); made up by the control plane if empty."""
    csr: str = ""
    """A PEM certificate signing request for the workload's SPIFFE id; empty: no certificate."""
    ready: bool = False
    """Whether the proxy serves its workload now (a reconnect after a control-plane restart):
    its instance is registered ready at once, not withdrawn until its first `Health`."""
    identity: str = ""
    certificate_expiry: float = 0.0
    """The SPIFFE id and expiry (seconds since the epoch) of the certificate the proxy holds,
    so that a restarted control plane can show what it did not sign itself."""
    taps: bool = False
    """Whether the proxy takes `TapStart` (sends request summaries while a tap runs)."""
    admin: str = ""
    """HOST:PORT of the proxy's admin endpoint (its /stats/prometheus), for the control plane's
    scrape-target discovery; empty: not announced."""
    pod: str = ""
    """The pod (replica) the proxy stands in front of, e.g. `web-0`: a StatefulSet's replicas
    are labelled with it, so that each has a name of its own in the mesh."""


class Welcome(Struct, frozen=True, tag="welcome"):
    """The control plane's answer to `Hello`."""

    proxy: str
    control_plane: str
    certificate: str = ""
    """The signed chain (PEM, leaf first) for the hello's CSR."""
    certificate_error: str = ""
    """Why the CSR was not signed (no CA, or it asks for another identity)."""
    identity: str = ""
    """The SPIFFE id the CA signs for this workload ("" without a CA): a proxy that asked for
    another, or for none, sends a `Renew` for this one."""
    not_before: float = 0.0
    not_after: float = 0.0
    """The certificate's validity (seconds since the epoch), so the proxy need not parse it."""


class Renew(Struct, frozen=True, tag="renew"):
    """A new CSR, sent when the proxy's certificate is half way through its life."""

    csr: str


class Issued(Struct, frozen=True, tag="issued"):
    """The answer to `Renew`: a chain, or why there is none."""

    certificate: str = ""
    error: str = ""
    not_before: float = 0.0
    not_after: float = 0.0


class TableDelta(Struct, frozen=True):
    """Changes to one route table: virtual hosts by name."""

    name: str
    upsert: tuple[VirtualHost, ...] = ()
    remove: tuple[str, ...] = ()


class Update(Struct, frozen=True, tag="update"):
    """A new version: whole when `base` is empty, else the changes since `base`."""

    version: str
    base: str = ""
    node: Node | None = None
    listeners: tuple[Listener, ...] | None = None
    telemetry: Telemetry | None = None
    security: Security | None = None
    tables: tuple[TableDelta, ...] = ()
    removed_tables: tuple[str, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    removed_clusters: tuple[str, ...] = ()
    shared: bytes = b""
    """More virtual hosts of `SHARED_TABLE` and more clusters, as zlib-compressed JSON (a
    `Shared`): a whole update of a large mesh, compressed once for every proxy that gets it."""


class Shared(Struct, frozen=True):
    """What `Update.shared` holds once decompressed."""

    hosts: tuple[VirtualHost, ...] = ()
    clusters: tuple[Cluster, ...] = ()


SHARED_TABLE = "outbound"
"""The route table whose hosts `Update.shared` carries."""


class Ack(Struct, frozen=True, tag="ack"):
    """The proxy's answer to an update: applied (no error), or rejected and why (a NACK)."""

    version: str
    error: str = ""
    resync: bool = False
    """Set with an error when the update was a delta on a version the proxy does not run."""


class Health(Struct, frozen=True, tag="health"):
    """Whether the workload behind this proxy is ready for traffic."""

    ready: bool
    message: str = ""


class TapFilter(Struct, frozen=True):
    """Which finished requests a tap wants: those to one service, optionally narrowed."""

    service: str
    """The destination service's name (its `app`, as `destination_service_name`)."""
    namespace: str = "default"
    path_prefix: str = ""
    method: str = ""
    reporter: str = ""
    """`source` (callers' outbound and gateway listeners), `destination` (the service's
    inbound ones), or "" for both."""


class TapStart(Struct, frozen=True, tag="tap_start"):
    """Send summaries of matching requests until `max_events` or `duration_s`, whichever
    comes first; the proxy ends the tap by itself then, with or without a `TapStop`."""

    id: str
    filter: TapFilter
    max_events: int = 100
    duration_s: float = 30.0


class TapStop(Struct, frozen=True, tag="tap_stop"):
    """End a tap now."""

    id: str


class TapEvent(Struct, frozen=True):
    """One finished request, as a proxy saw it."""

    timestamp: float
    reporter: str
    proxy: str
    """The reporting proxy's workload, `NAME.NAMESPACE`."""
    method: str
    authority: str
    path: str
    status: int
    duration_ms: float
    flags: str = ""
    request_id: str = ""
    source: str = ""
    """The caller: its workload (outbound) or the principal its certificate proved (inbound)."""
    destination: str = ""
    """The destination service, `NAME.NAMESPACE`."""
    request_bytes: int = 0
    response_bytes: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    """Request headers, with credentials (authorization, cookie, ...) redacted."""


class TapEvents(Struct, frozen=True, tag="tap_events"):
    """What a tap matched since the last message; `ended` when the proxy ended the tap."""

    id: str
    events: tuple[TapEvent, ...] = ()
    ended: bool = False
    dropped: int = 0
    """Matches not sent because the proxy's tap buffer was full."""


class Lease(Struct, frozen=True):
    """A gateway asks for `want` permits of one consumer's shared budget, and gives back
    `returned` it leased and did not use (docs/api-gateway.md, "Limits across replicas")."""

    product: str
    consumer: str
    want: int = 0
    returned: int = 0
    demand: float = 0.0
    """Requests per second this gateway was offered for the consumer lately (averaged over
    about half a second), admitted or not: the control plane shares the rate in proportion."""


class LeaseRequest(Struct, frozen=True, tag="leases"):
    """Leases asked for together; answered by one `LeaseGrants` with the same `seq`."""

    seq: int
    leases: tuple[Lease, ...]


class Grant(Struct, frozen=True):
    """What the control plane granted of one `Lease`: each permit admits one request."""

    product: str
    consumer: str
    granted: int = 0
    retry_after: float = 0.0
    """When `granted` is short of `want`: seconds until the budget has a permit again."""
    limit: str = ""
    """What ran out: `rate` or `quota` ("" when nothing did)."""
    remaining: int = 0
    """Permits left in the shared bucket after this grant (RateLimit's `r`)."""
    quota_remaining: int = -1
    """Requests left in the quota period; -1 without a quota."""
    unknown: bool = False
    """The control plane knows no such consumer (yet): the gateway falls back on its own."""


class LeaseGrants(Struct, frozen=True, tag="grants"):
    """The answer to a `LeaseRequest`."""

    seq: int
    grants: tuple[Grant, ...]


ToControlPlane = Hello | Ack | Health | Renew | TapEvents | LeaseRequest
ToProxy = Welcome | Update | Issued | TapStart | TapStop | LeaseGrants

_to_control_plane = msgspec.json.Decoder(ToControlPlane)
_to_proxy = msgspec.json.Decoder(ToProxy)
_encoder = msgspec.json.Encoder()
_shared = msgspec.json.Decoder(Shared)


def encode(message: ToControlPlane | ToProxy) -> bytes:
    """A message as one JSON document."""
    return _encoder.encode(message)


def decode_from_proxy(data: bytes | str) -> ToControlPlane:
    """A proxy's message; SnapshotError when it is not one."""
    try:
        message: ToControlPlane = _to_control_plane.decode(data)
    except msgspec.DecodeError as error:
        raise SnapshotError(f"not a proxy message: {error}") from None
    return message


def decode_from_control_plane(data: bytes | str) -> ToProxy:
    """A control plane's message; SnapshotError when it is not one."""
    try:
        message: ToProxy = _to_proxy.decode(data)
    except msgspec.DecodeError as error:
        raise SnapshotError(f"not a control-plane message: {error}") from None
    return message


def pieces(message: bytes) -> list[bytes]:
    """The WebSocket messages that carry `message`: itself when small, else its pieces."""
    if len(message) <= PIECE_BYTES:
        return [message]
    view = memoryview(message)
    starts = range(0, len(message), PIECE_BYTES)
    last = starts[-1]
    return [
        (_LAST if start == last else _MORE) + view[start : start + PIECE_BYTES] for start in starts
    ]


class Reassembly:
    """Puts messages that came in pieces back together, up to `MAX_MESSAGE_BYTES`."""

    __slots__ = ("_parts", "_size")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes | str) -> bytes | str | None:
        """The whole message once `data` completes it (a message not in pieces at once);
        None while pieces are missing. SnapshotError when it grows too large."""
        marker = data[:1]
        if isinstance(data, str) or marker not in (_MORE, _LAST):
            return data
        self._size += len(data) - 1
        if self._size > MAX_MESSAGE_BYTES:
            self._parts.clear()
            self._size = 0
            raise SnapshotError(f"a message larger than {MAX_MESSAGE_BYTES} bytes")
        self._parts.append(data[1:])
        if marker == _MORE:
            return None
        whole = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        return whole


class StaleBaseError(SnapshotError):
    """A delta against a version the proxy does not run; it needs a whole update."""


def compress_shared(hosts: bytes, clusters: bytes) -> bytes:
    """`Update.shared` for hosts and clusters given as the insides of JSON arrays, base64."""
    document = b'{"hosts":[' + hosts + b'],"clusters":[' + clusters + b"]}"
    return base64.b64encode(zlib.compress(document, 1))


def expand_shared(update: Update) -> Update:
    """The update with what `shared` holds merged in (and `shared` emptied)."""
    if not update.shared:
        return update
    inflate = zlib.decompressobj()
    try:
        data = inflate.decompress(update.shared, MAX_MESSAGE_BYTES)
        shared = _shared.decode(data)
    except (zlib.error, msgspec.DecodeError) as error:
        raise SnapshotError(f"update {update.version}: shared part unreadable: {error}") from None
    if inflate.unconsumed_tail:
        raise SnapshotError(f"update {update.version}: shared part over {MAX_MESSAGE_BYTES} bytes")
    tables = list(update.tables)
    at = next((i for i, t in enumerate(tables) if t.name == SHARED_TABLE), None)
    if at is None:
        tables.append(TableDelta(SHARED_TABLE, shared.hosts))
    else:
        table = tables[at]
        tables[at] = msgspec.structs.replace(table, upsert=shared.hosts + table.upsert)
    return msgspec.structs.replace(
        update, tables=tuple(tables), clusters=shared.clusters + update.clusters, shared=b""
    )


def apply_update(current: Snapshot | None, update: Update) -> Snapshot:
    """The snapshot `update` makes from `current`, checked; SnapshotError when it cannot be run."""
    update = expand_shared(update)
    if update.base:
        if current is None or current.version != update.base:
            have = current.version if current is not None else "nothing"
            raise StaleBaseError(f"update {update.version} is a delta on {update.base}, not {have}")
        start = current
    else:
        start = Snapshot(version="")
    tables = {table.name: _hosts(table.virtual_hosts) for table in start.route_tables}
    for name in update.removed_tables:
        tables.pop(name, None)
    for delta in update.tables:
        hosts = tables.setdefault(delta.name, {})
        for removed in delta.remove:
            hosts.pop(removed, None)
        hosts.update(_hosts(delta.upsert))
    clusters = {cluster.name: cluster for cluster in start.clusters}
    for removed in update.removed_clusters:
        clusters.pop(removed, None)
    clusters.update((cluster.name, cluster) for cluster in update.clusters)
    snapshot = Snapshot(
        version=update.version,
        node=update.node if update.node is not None else start.node,
        listeners=update.listeners if update.listeners is not None else start.listeners,
        route_tables=tuple(
            RouteTable(name=name, virtual_hosts=tuple(hosts.values()))
            for name, hosts in tables.items()
        ),
        clusters=tuple(sorted(clusters.values(), key=lambda cluster: cluster.name)),
        telemetry=update.telemetry if update.telemetry is not None else start.telemetry,
        security=update.security if update.security is not None else start.security,
    )
    check(snapshot)
    return snapshot


def _hosts(hosts: Iterable[VirtualHost]) -> dict[str, VirtualHost]:
    return {host.name: host for host in hosts}


def diff_named(
    old: Mapping[str, _Named], new: Mapping[str, _Named]
) -> tuple[tuple[_Named, ...], tuple[str, ...]]:
    """What changed from `old` to `new`: the upserted items, and the names removed."""
    upsert = tuple(item for name, item in new.items() if old.get(name) != item)
    removed = tuple(name for name in old if name not in new)
    return upsert, removed
