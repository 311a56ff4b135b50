"""What each connected proxy should run, computed once per shared view and once per workload.

Sidecars in one namespace whose pod labels agree on the few keys that rules select callers by
see the same outbound routes and clusters: a `View`. A change recomputes each view once, diffs
it against the previous state once, and encodes that delta once; every proxy of the view then
receives the same bytes. What is particular to one workload (its node, listeners, inbound
routes; all of a gateway) is an `Own` part, recomputed only when the kinds it reads change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from gossamer.resources import Resource
from gossamer.snapshot.model import Cluster, Listener, Node, Security, Telemetry, VirtualHost
from gossamer.snapshot.protocol import compress_shared, diff_named
from gossamer.snapshot.translate import (
    EndpointIndex,
    GatewaySpec,
    SidecarSpec,
    gateway_snapshot,
    outbound_view,
    sidecar_catalog,
    sidecar_own,
    vip_snapshot,
)
from gossamer.snapshot.translate_catalog import Catalog
from gossamer.snapshot.translate_clusters import service_clusters

ViewKey = tuple[str, tuple[tuple[str, str], ...]]
"""A namespace, and the caller labels that rules in the mesh select on."""

_encoder = msgspec.json.Encoder()


def view_key(namespace: str, labels: Mapping[str, str], keys: frozenset[str]) -> ViewKey:
    """The view a sidecar with these pod labels belongs to."""
    return namespace, tuple(sorted((k, v) for k, v in labels.items() if k in keys))


@dataclass(frozen=True, slots=True)
class Own:
    """A proxy's particular part: node, listeners, its route tables and clusters."""

    node: Node
    listeners: tuple[Listener, ...]
    tables: Mapping[str, Mapping[str, VirtualHost]]
    clusters: Mapping[str, Cluster]
    telemetry: Telemetry = field(default_factory=Telemetry)
    security: Security = field(default_factory=Security)


def sidecar_part(
    resources: Sequence[Resource], spec: SidecarSpec, labels: Mapping[str, str]
) -> Own:
    """A sidecar's own part."""
    own = sidecar_own(sidecar_catalog(resources, spec.namespace, labels), spec, labels)
    return Own(
        node=own.node,
        listeners=own.listeners,
        tables={own.inbound.name: _by_name(own.inbound.virtual_hosts)},
        clusters={cluster.name: cluster for cluster in own.clusters},
    )


def gateway_part(resources: Sequence[Resource], endpoints: EndpointIndex, spec: GatewaySpec) -> Own:
    """A gateway has no shared view: all of it is its own."""
    snapshot = gateway_snapshot(resources, endpoints, spec, "")
    return Own(
        node=snapshot.node,
        listeners=snapshot.listeners,
        tables={table.name: _by_name(table.virtual_hosts) for table in snapshot.route_tables},
        clusters={cluster.name: cluster for cluster in snapshot.clusters},
        telemetry=snapshot.telemetry,
    )


def vip_part(
    resources: Sequence[Resource],
    endpoints: EndpointIndex,
    vips: Mapping[tuple[str, str], str],
    node: Node,
) -> Own:
    """The VIP proxy: all of it is its own, like a gateway's."""
    snapshot = vip_snapshot(resources, endpoints, vips, node, "")
    return Own(
        node=snapshot.node,
        listeners=snapshot.listeners,
        tables={table.name: _by_name(table.virtual_hosts) for table in snapshot.route_tables},
        clusters={cluster.name: cluster for cluster in snapshot.clusters},
        telemetry=snapshot.telemetry,
    )


def _by_name(hosts: Sequence[VirtualHost]) -> dict[str, VirtualHost]:
    return {host.name: host for host in hosts}


@dataclass(frozen=True, slots=True)
class Fragment:
    """Pre-encoded pieces of an update: virtual hosts of `outbound` and clusters, upserted or
    removed. `hosts` and `clusters` are the inside of a JSON array (no brackets), maybe empty."""

    hosts: bytes
    removed_hosts: tuple[str, ...]
    clusters: bytes
    removed_clusters: tuple[str, ...]
    shared: bytes = b""
    """Instead of `hosts` and `clusters`: both, compressed (`Update.shared`, base64)."""

    @property
    def empty(self) -> bool:
        """Whether it changes nothing."""
        removed = self.removed_hosts or self.removed_clusters
        return not (self.hosts or self.clusters or self.shared or removed)


COMPRESS_OVER = 64 * 1024
"""A whole view larger than this goes compressed: once per state, the same bytes to every proxy
of the view (a mesh of 5,000 services: 3.6 MB of JSON, 0.25 MB compressed in 8 ms)."""


def _inner(items: Sequence[object]) -> bytes:
    """The JSON of a list, without its brackets."""
    return _encoder.encode(items)[1:-1] if items else b""


HISTORY = 16
"""How many recent steps of a view a proxy may lag behind and still get a delta."""


@dataclass(frozen=True, slots=True)
class Step:
    """One recompute of a view: from which generation, and the names it changed."""

    since: int
    hosts: frozenset[str]
    clusters: frozenset[str]


@dataclass(slots=True)
class ViewState:
    """One computed state of a view: its parts by name, the whole encoded, and the names each
    of its last steps changed, so that a proxy a few steps behind gets a delta, not the whole
    (in a large mesh the whole is megabytes; a proxy that was slow to read while its view
    changed twice used to get it again)."""

    generation: int
    hosts: dict[str, VirtualHost]
    clusters: dict[str, Cluster]
    steps: tuple[Step, ...] = ()
    """Oldest first; the last one led to this state."""
    catalog: Catalog | None = None
    """What the state was computed from, kept while only endpoints change (`patch_endpoints`)."""
    _whole: Fragment | None = None
    _deltas: dict[int, Fragment] = field(default_factory=dict)

    def whole(self) -> Fragment:
        """Everything in this state."""
        if self._whole is None:
            hosts = _inner(list(self.hosts.values()))
            clusters = _inner(list(self.clusters.values()))
            if len(hosts) + len(clusters) <= COMPRESS_OVER:
                self._whole = Fragment(hosts, (), clusters, ())
            else:
                self._whole = Fragment(b"", (), b"", (), shared=compress_shared(hosts, clusters))
        return self._whole

    def delta(self) -> Fragment:
        """What changed in the last step (there must be one)."""
        fragment = self.delta_since(self.steps[-1].since)
        assert fragment is not None
        return fragment

    def delta_since(self, generation: int) -> Fragment | None:
        """What changed since the state of `generation`; None when that is too far back."""
        if generation in self._deltas:
            return self._deltas[generation]
        index = next((i for i, step in enumerate(self.steps) if step.since == generation), None)
        if index is None:
            return None
        hosts = frozenset().union(*(step.hosts for step in self.steps[index:]))
        clusters = frozenset().union(*(step.clusters for step in self.steps[index:]))
        fragment = Fragment(
            _inner([item for name, item in self.hosts.items() if name in hosts]),
            tuple(sorted(name for name in hosts if name not in self.hosts)),
            _inner([item for name, item in self.clusters.items() if name in clusters]),
            tuple(sorted(name for name in clusters if name not in self.clusters)),
        )
        self._deltas[generation] = fragment
        return fragment

    def same_as(self, other: ViewState) -> bool:
        """Whether both states hold the same parts."""
        return self.hosts == other.hosts and self.clusters == other.clusters


def compute_view(
    resources: Sequence[Resource],
    endpoints: EndpointIndex,
    key: ViewKey,
    generation: int,
    previous: ViewState | None,
) -> ViewState:
    """The view's state now, with the names changed since `previous` as its last step."""
    namespace, labels = key
    catalog = sidecar_catalog(resources, namespace, dict(labels))
    view = outbound_view(catalog, endpoints)
    hosts = _by_name(view.virtual_hosts)
    clusters = {cluster.name: cluster for cluster in view.clusters}
    steps: tuple[Step, ...] = ()
    if previous is not None:
        step = Step(
            previous.generation,
            _changed_names(previous.hosts, hosts),
            _changed_names(previous.clusters, clusters),
        )
        steps = (*previous.steps, step)[-HISTORY:]
    return ViewState(generation, hosts, clusters, steps, catalog)


def patch_endpoints(
    previous: ViewState, endpoints: EndpointIndex, hosts: frozenset[str], generation: int
) -> ViewState | None:
    """The view once the endpoints of the services `hosts` changed and nothing else did: their
    clusters rebuilt, every other part kept. The same state `compute_view` would give, for a
    fraction of its cost in a large mesh (a storm of registrations changes endpoints only).
    None when `previous` kept no catalog to patch from."""
    catalog = previous.catalog
    if catalog is None:
        return None
    clusters = dict(previous.clusters)
    changed: set[str] = set()
    for host in hosts:
        service = catalog.by_host.get(host)
        if service is None:
            continue
        for cluster in service_clusters(catalog, service, endpoints):
            if clusters.get(cluster.name) != cluster:
                clusters[cluster.name] = cluster
                changed.add(cluster.name)
    step = Step(previous.generation, frozenset(), frozenset(changed))
    steps = (*previous.steps, step)[-HISTORY:]
    return ViewState(generation, previous.hosts, clusters, steps, catalog)


def _changed_names(old: Mapping[str, object], new: Mapping[str, object]) -> frozenset[str]:
    changed = {name for name, item in new.items() if old.get(name) != item}
    changed.update(name for name in old if name not in new)
    return frozenset(changed)


def encode_update(
    version: str,
    base: str,
    view: Fragment | None,
    old: Own | None,
    new: Own,
) -> bytes | None:
    """One proxy's update as JSON; None when it would change nothing.

    `view` is the shared part (already encoded, whole or delta); `old` is the own part the
    proxy runs (None: send it whole).
    """
    parts: list[bytes] = [b'{"type":"update","version":', _encoder.encode(version)]
    if base:
        parts += [b',"base":', _encoder.encode(base)]
    changed = view is not None and not view.empty
    if old is None or old.node != new.node:
        parts += [b',"node":', _encoder.encode(new.node)]
        changed = True
    if old is None or old.listeners != new.listeners:
        parts += [b',"listeners":', _encoder.encode(new.listeners)]
        changed = True
    if old is None or old.telemetry != new.telemetry:
        parts += [b',"telemetry":', _encoder.encode(new.telemetry)]
        changed = True
    if old is None or old.security != new.security:
        parts += [b',"security":', _encoder.encode(new.security)]
        changed = True
    tables: list[bytes] = []
    # A whole update names every table, empty or not: listeners refer to them by name.
    if view is not None and (view.hosts or view.removed_hosts or not base):
        tables.append(
            b'{"name":"outbound","upsert":['
            + view.hosts
            + b'],"remove":'
            + _encoder.encode(view.removed_hosts)
            + b"}"
        )
    for name, hosts in new.tables.items():
        before = old.tables.get(name) if old is not None else None
        upsert, removed = diff_named(before or {}, hosts)
        if upsert or removed or before is None:
            tables.append(_encoder.encode({"name": name, "upsert": upsert, "remove": removed}))
    removed_tables = [name for name in (old.tables if old else ()) if name not in new.tables]
    if tables:
        parts += [b',"tables":[', b",".join(tables), b"]"]
        changed = True
    if removed_tables:
        parts += [b',"removed_tables":', _encoder.encode(removed_tables)]
        changed = True
    clusters, removed = diff_named(old.clusters if old else {}, new.clusters)
    cluster_parts = [part for part in (view.clusters if view else b"", _inner(clusters)) if part]
    if cluster_parts:
        parts += [b',"clusters":[', b",".join(cluster_parts), b"]"]
        changed = True
    if view is not None and view.shared:
        parts += [b',"shared":"', view.shared, b'"']
    removed_all = (*(view.removed_clusters if view else ()), *removed)
    if removed_all:
        parts += [b',"removed_clusters":', _encoder.encode(removed_all)]
        changed = True
    if base and not changed:
        return None
    parts.append(b"}")
    return b"".join(parts)
