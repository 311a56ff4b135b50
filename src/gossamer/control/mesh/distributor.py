"""Push: recompute what proxies run when the store changes, debounced, and track their answers.

Changes arrive from the mirror. The first change of a quiet period starts a `debounce_s` timer
that each further change restarts, up to `max_delay_s` after the first, so that a burst (an
`apply -f folder`) is one recompute. A recompute rebuilds the shared views and the own parts the
change can touch, then wakes the stream of every proxy whose target changed. Each stream's
writer asks `compose` for the bytes to send: a delta from what the proxy last received when
possible, the whole otherwise. ACKs and NACKs move each proxy's acknowledged state; a NACKed
proxy keeps its last good snapshot (the proxy's side) and is reported as NACKED here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from gossamer.control.apikeys.records import API_KEYS, issued_keys
from gossamer.control.mesh.mirror import StoreMirror
from gossamer.control.mesh.views import (
    Own,
    ViewKey,
    ViewState,
    compute_view,
    encode_update,
    gateway_part,
    patch_endpoints,
    sidecar_part,
    view_key,
    vip_part,
)
from gossamer.control.mesh.workloads import WorkloadIndex
from gossamer.control.store import ObjectKey, ResourceType
from gossamer.resources import Resource
from gossamer.resources.kinds.istio_networking import WorkloadEntry
from gossamer.security.spiffe import spiffe_id
from gossamer.snapshot.endpoints import endpoint_index
from gossamer.snapshot.model import Node, Security
from gossamer.snapshot.protocol import Ack, Hello
from gossamer.snapshot.translate import EndpointIndex, GatewaySpec, SidecarSpec, view_label_keys
from gossamer.snapshot.translate_apiproduct import api_products
from gossamer.snapshot.translate_security import SecurityIndex
from gossamer.snapshot.translate_telemetry import is_telemetry, telemetry_for
from gossamer.snapshot.vips import assign_vips, services_of

log = logging.getLogger(__name__)

QUIET_AFTER_RECOMPUTE = 2.0
"""After a recompute whose work took T, the next one waits until 2T has passed: while proxies
join by the thousand (each registration a change) recomputes take at most a third of the time,
and the rest goes to the joins; a lone change after a quiet period is not delayed. In a storm
(changes that arrive while the proxies the last recompute woke are still being sent their
updates) T runs until the last of them has composed its update: with 5,000 proxies connected,
sending each its delta costs more than a recompute of endpoints alone."""

ENTRIES = ResourceType("networking.istio.io", "workloadentries")
# Policies: each proxy's own part enforces them; PeerAuthentication also says which endpoints
# take mTLS.
SECURITY_KINDS = frozenset(
    {
        ResourceType("security.istio.io", "peerauthentications"),
        ResourceType("security.istio.io", "authorizationpolicies"),
        ResourceType("security.istio.io", "requestauthentications"),
    }
)
# Tracing settings: each proxy's own part carries those that apply to its workload.
TELEMETRY_KINDS = frozenset(
    {
        ResourceType("telemetry.istio.io", "telemetries"),
        ResourceType("gossamer.dev", "telemetryproviders"),
    }
)
# Kinds a sidecar's own part reads (its ports come from the Services selecting its Deployment).
WORKLOAD_KINDS = (
    ResourceType("apps", "deployments"),
    ResourceType("apps", "statefulsets"),
    ResourceType("batch", "jobs"),
)
OWN_KINDS = frozenset(
    {
        *WORKLOAD_KINDS,
        ResourceType("", "services"),
        *SECURITY_KINDS,
        *TELEMETRY_KINDS,
    }
)
# What the workload index holds: a change to any of these rebuilds it.
INDEXED_KINDS = frozenset(
    {
        *WORKLOAD_KINDS,
        ResourceType("", "services"),
        ResourceType("networking.istio.io", "serviceentries"),
    }
)
GATEWAY_LABELS = {"istio": "ingressgateway"}

ViewMark = tuple[ViewKey, int]
"""Which state of a view a proxy was sent: its key and generation. A stream keeps marks, not
the states: a state of a large mesh's view is megabytes, and proxies slow to answer would keep
one alive per generation they lag behind."""


@dataclass(eq=False)
class ProxyStream:
    """One connected proxy: what it should run, what it was sent, and what it acknowledged."""

    id: str
    hello: Hello
    labels: Mapping[str, str]
    service_account: str
    connected_at: float = field(default_factory=time.time)
    view_key: ViewKey | None = None
    own: Own | None = None
    sent_view: ViewMark | None = None
    sent_own: Own | None = None
    sent_version: str = ""
    acked_view: ViewMark | None = None
    acked_own: Own | None = None
    acked_version: str = ""
    nack: tuple[str, str] | None = None
    """(version, error) of the last NACK, until an ACK clears it."""
    identity: str = ""
    """The SPIFFE id of the certificate last signed for this proxy."""
    certificate_expiry: float = 0.0
    """When that certificate expires (seconds since the epoch)."""
    pending: dict[str, tuple[ViewMark | None, Own]] = field(default_factory=dict)
    sent_at: dict[str, float] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by the proxy's first ACK or NACK."""

    @property
    def role(self) -> str:
        """`sidecar` or `gateway`."""
        return self.hello.role

    @property
    def state(self) -> str:
        """SYNCED, STALE (an update is on its way or unanswered) or NACKED."""
        if self.nack is not None:
            return "NACKED"
        if self.pending or not self.acked_version or self.wake.is_set():
            return "STALE"
        return "SYNCED"


class Distributor:
    """Connected proxies of this replica, and the views and parts they run."""

    def __init__(
        self,
        mirror: StoreMirror,
        replica: str,
        debounce_s: float = 0.1,
        max_delay_s: float = 1.0,
        *,
        roots: tuple[str, ...] = (),
        trust_domain: str = "cluster.local",
    ) -> None:
        self.mirror = mirror
        self.roots = roots
        """The mesh CA's trust anchors; empty when the mesh runs without mTLS."""
        self.trust_domain = trust_domain
        self.security = SecurityIndex(())
        self._security_stale = True
        """A policy changed since `security` was built (a proxy connecting now must not get a
        snapshot without it, even for the debounce)."""
        self.replica = replica
        self.debounce_s = debounce_s
        self.max_delay_s = max_delay_s
        self.streams: dict[str, ProxyStream] = {}
        self.views: dict[ViewKey, ViewState] = {}
        self.generation = 0
        self.endpoints: EndpointIndex = {}
        self.label_keys: frozenset[str] = frozenset()
        self._label_keys_stale = True
        self._workloads: WorkloadIndex | None = None
        """Built on first use after a change to its kinds: a hello reads it, never the mesh."""
        self._telemetry: list[Resource] | None = None
        """The Telemetry and TelemetryProvider resources, until one of them changes."""
        self.recomputes = 0
        self._ids = itertools.count(1)
        self._dirty_views = False
        self._dirty_own = False
        self._dirty_endpoints = False
        self._first_change = 0.0
        self._flushed_at = 0.0
        """When the last recompute started (the loop's clock)."""
        self._cost = 0.0
        """How long the last recompute took."""
        self._ripple = 0.0
        """How long from its start until the streams it woke had composed their updates."""
        self._rippling: set[str] = set()
        """Streams the last recompute woke that have not composed their update yet."""
        self._storm = False
        """A change came while `_rippling` was not empty."""
        self._timer: asyncio.TimerHandle | None = None
        self.on_ack: list[Any] = []
        """Callbacks `(stream, version, seconds since sent)` for each ACK (benchmarks use it)."""

    def __repr__(self) -> str:
        return (
            f"<Distributor {len(self.streams)} proxies, {len(self.views)} views, "
            f"generation {self.generation}>"
        )

    def start(self) -> None:
        """Follow the mirror's changes."""
        self.mirror.subscribe(self._changed)

    def prime(self) -> None:
        """Compute now what the mirror's first listing changed, instead of after the debounce.

        Called once the mirror holds the whole store and before any proxy can connect: a proxy
        that connected during the first debounce was sent the endpoints of the empty index, and a
        control plane restarted under load had its first gateway answer "no healthy upstream"
        until the recompute."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._recompute()

    def close(self) -> None:
        """Stop recomputing."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- changes -------------------------------------------------------------------------------

    def _changed(self, keys: frozenset[ObjectKey]) -> None:
        for key in keys:
            if key.type == ENTRIES:
                self._dirty_endpoints = True
            elif key.type not in _INTERNAL:
                if key.type in SECURITY_KINDS:
                    self._dirty_endpoints = True
                    self._security_stale = True
                if key.type in INDEXED_KINDS:
                    self._workloads = None
                if key.type in TELEMETRY_KINDS:
                    self._telemetry = None
                self._label_keys_stale = True
                self._dirty_views = True
                if key.type in OWN_KINDS:
                    self._dirty_own = True
        if not (self._dirty_views or self._dirty_endpoints):
            return
        if self._rippling:
            self._storm = True
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._timer is None:
            self._first_change = now
        else:
            self._timer.cancel()
        at = min(now + self.debounce_s, self._first_change + self.max_delay_s)
        self._timer = loop.call_at(max(at, self._quiet_until()), self._flush)

    def _quiet_until(self) -> float:
        cost = max(self._cost, self._ripple) if self._storm else self._cost
        return self._flushed_at + (1.0 + QUIET_AFTER_RECOMPUTE) * cost

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        if self._rippling:
            # The proxies the last recompute woke are still being sent their updates.
            self._timer = loop.call_at(loop.time() + max(self._cost, 0.01), self._flush)
            return
        quiet = self._quiet_until()
        if loop.time() < quiet:
            self._timer = loop.call_at(quiet, self._flush)
            return
        self._timer = None
        self._flushed_at = loop.time()
        self._storm = False
        self._ripple = 0.0
        started = time.perf_counter()
        try:
            self._recompute()
        finally:
            self._cost = time.perf_counter() - started

    def _composed(self, stream: ProxyStream) -> None:
        """A stream composed its update: the last recompute's ripple may have ended."""
        rippling = self._rippling
        if stream.id in rippling:
            rippling.discard(stream.id)
            if not rippling:
                self._ripple = asyncio.get_running_loop().time() - self._flushed_at

    def _recompute(self) -> None:
        views, own, endpoints = self._dirty_views, self._dirty_own, self._dirty_endpoints
        self._dirty_views = self._dirty_own = self._dirty_endpoints = False
        started = time.perf_counter()
        resources = list(self.mirror.resources.values())
        if own or endpoints or self._security_stale:
            self._index_security(resources)
        # Only endpoints changed (registrations, health): views are patched, not recomputed.
        patch: frozenset[str] | None = None
        if endpoints:
            index = endpoint_index(resources, self._identity_of if self.roots else None)
            if index != self.endpoints:
                if not views:
                    patch = _changed_hosts(self.endpoints, index)
                self.endpoints = index
                views = True
        if not views:
            return
        self.generation += 1
        self.recomputes += 1
        self._refresh_label_keys(resources)
        for stream in self.streams.values():
            if stream.role == "sidecar":
                stream.view_key = view_key(stream.hello.namespace, stream.labels, self.label_keys)
        wanted = {s.view_key for s in self.streams.values() if s.view_key is not None}
        changed: set[ViewKey] = set()
        for key in wanted:
            old = self.views.get(key)
            state = None
            if old is not None and patch is not None:
                state = patch_endpoints(old, self.endpoints, patch, self.generation)
            if state is None:
                state = compute_view(resources, self.endpoints, key, self.generation, old)
            if old is None or not state.same_as(old):
                self.views[key] = state
                changed.add(key)
        for key in set(self.views) - wanted:
            del self.views[key]
        for stream in self.streams.values():
            touched = stream.view_key in changed
            if stream.role != "sidecar" or own:
                part = self._own_part(stream, resources)
                if part != stream.own:
                    stream.own = part
                    touched = True
            if touched:
                stream.wake.set()
                if stream.sent_version:  # not one still waiting for its first update
                    self._rippling.add(stream.id)
        log.debug(
            "recompute %d: %d views (%d changed), %d proxies, %.1f ms",
            self.generation,
            len(wanted),
            len(changed),
            len(self.streams),
            (time.perf_counter() - started) * 1000,
        )

    # -- streams -------------------------------------------------------------------------------

    def connect(self, hello: Hello) -> ProxyStream:
        """A proxy said hello: compute what it runs, and have its writer send it whole."""
        resources = list(self.mirror.resources.values())
        # The endpoints may lag a pending recompute by the debounce: the recompute corrects them
        # with a delta. Rebuilding them here made a storm of connections quadratic; so did
        # reading every resource for the proxy's own part (the workload index answers that).
        labels, account = self._identity(hello)
        if self._security_stale:
            self._index_security(resources)
        name = hello.name or f"{hello.workload}.{hello.namespace}"
        stream = ProxyStream(
            id=f"{name}~{self.replica}~{next(self._ids)}",
            hello=hello,
            labels=labels,
            service_account=account,
        )
        self.generation += 1
        if hello.role == "sidecar":
            self._refresh_label_keys(resources)
            stream.view_key = view_key(hello.namespace, labels, self.label_keys)
            if stream.view_key not in self.views:
                self.views[stream.view_key] = compute_view(
                    resources, self.endpoints, stream.view_key, self.generation, None
                )
        stream.own = self._own_part(stream, resources)
        self.streams[stream.id] = stream
        stream.wake.set()
        return stream

    def disconnect(self, stream: ProxyStream) -> None:
        """The proxy's stream ended."""
        self.streams.pop(stream.id, None)
        self._composed(stream)

    def compose(self, stream: ProxyStream) -> bytes | None:
        """The next message for a proxy, or None when it has everything; marks it sent."""
        assert stream.own is not None
        self._composed(stream)
        key = stream.view_key
        view = self.views.get(key) if key is not None else None
        mark = (key, view.generation) if key is not None and view is not None else None
        version = str(self.generation)
        if stream.sent_version == version:
            return None
        fragment = None
        base, old = stream.sent_version, stream.sent_own
        if view is not None and stream.sent_view != mark:
            sent = stream.sent_view
            # A proxy a few steps behind (slow to read while the view changed) gets one delta.
            fragment = view.delta_since(sent[1]) if sent is not None and sent[0] == key else None
            if fragment is None:
                base, old = "", None
        if old is None:
            base = ""
            fragment = view.whole() if view is not None else None
        message = encode_update(version, base, fragment, old, stream.own)
        stream.sent_view, stream.sent_own = mark, stream.own
        if message is None:
            # Nothing this proxy runs changed: what it acknowledged still holds.
            if stream.acked_version == stream.sent_version:
                stream.acked_view, stream.acked_own = mark, stream.own
            return None
        stream.sent_version = version
        stream.pending[version] = (mark, stream.own)
        stream.sent_at[version] = time.perf_counter()
        return message

    def acknowledge(self, stream: ProxyStream, ack: Ack, resync: bool = False) -> None:
        """Record a proxy's ACK or NACK of a version it was sent."""
        stream.answered.set()
        sent = stream.pending.pop(ack.version, None)
        sent_at = stream.sent_at.pop(ack.version, None)
        if sent is None:
            return  # an answer to something superseded, or made up: nothing to learn
        # Older versions in flight can no longer be answered meaningfully.
        for version in [v for v in stream.pending if int(v) < int(ack.version)]:
            stream.pending.pop(version)
            stream.sent_at.pop(version, None)
        if not ack.error:
            stream.acked_view, stream.acked_own = sent
            stream.acked_version = ack.version
            stream.nack = None
            for callback in self.on_ack:
                callback(stream, ack.version, time.perf_counter() - (sent_at or 0.0))
            return
        log.warning("proxy %s rejected version %s: %s", stream.id, ack.version, ack.error)
        stream.nack = (ack.version, ack.error)
        # The proxy runs what it acknowledged last: the next update starts from there.
        stream.sent_view, stream.sent_own = stream.acked_view, stream.acked_own
        stream.sent_version = stream.acked_version
        stream.pending.clear()
        stream.sent_at.clear()
        if resync:
            stream.sent_view = stream.sent_own = None
            stream.wake.set()

    def status(self) -> list[dict[str, Any]]:
        """What each proxy of this replica runs, for `proxy-status`."""
        return [
            {
                "proxy": stream.id,
                "name": stream.hello.name,
                "workload": stream.hello.workload,
                "namespace": stream.hello.namespace,
                "role": stream.role,
                "controlPlane": self.replica,
                "connectedAt": stream.connected_at,
                "sent": stream.sent_version,
                "acked": stream.acked_version,
                "state": stream.state,
                "error": stream.nack[1] if stream.nack else "",
                "identity": stream.identity,
                "certificateExpiry": stream.certificate_expiry,
                "instance": (
                    f"{stream.hello.instance.address}:{stream.hello.instance.port}"
                    if stream.hello.instance
                    else ""
                ),
                "admin": stream.hello.admin,
                "address": stream.hello.address,
                "labels": dict(stream.labels),
            }
            for stream in self.streams.values()
        ]

    # -- parts ---------------------------------------------------------------------------------

    def _refresh_label_keys(self, resources: Sequence[Resource]) -> None:
        if self._label_keys_stale:
            self.label_keys = view_label_keys(resources)
            self._label_keys_stale = False

    def _index(self) -> WorkloadIndex:
        if self._workloads is None:
            self._workloads = WorkloadIndex(list(self.mirror.resources.values()))
        return self._workloads

    def _identity(self, hello: Hello) -> tuple[dict[str, str], str]:
        workload = self._index().deployment(hello.namespace, hello.workload)
        if workload is not None:
            return workload.replica_labels(hello.pod), workload.template.spec.account
        if hello.role == "gateway":
            return dict(GATEWAY_LABELS), "istio-ingressgateway-service-account"
        return {}, "default"

    def _index_security(self, resources: Sequence[Resource]) -> None:
        self.security = SecurityIndex(resources)
        self._security_stale = False

    def _identity_of(self, entry: WorkloadEntry) -> str:
        """What a client expects of an entry's sidecar: its SPIFFE id, or "" for plaintext."""
        if entry.inbound_port is None:
            return ""  # no sidecar in front of it
        mode = self.security.endpoint_mode(entry.namespace, entry.spec.labels, None)
        if mode == "DISABLE":
            return ""
        account = entry.spec.service_account or "default"
        return spiffe_id(self.trust_domain, entry.namespace, account)

    def _security_of(self, stream: ProxyStream) -> Security:
        hello = stream.hello
        if hello.role == "vip":
            return Security(trust_domain=self.trust_domain, roots=self.roots)
        return self.security.for_workload(
            hello.namespace, stream.labels, roots=self.roots, trust_domain=self.trust_domain
        )

    def _own_part(self, stream: ProxyStream, resources: Sequence[Resource]) -> Own:
        own = self._own_routes(stream, resources)
        if self._telemetry is None:
            self._telemetry = [resource for resource in resources if is_telemetry(resource)]
        hello = stream.hello
        telemetry = telemetry_for(self._telemetry, hello.namespace, stream.labels)
        security = self._security_of(stream)
        if hello.role == "gateway":
            issued = issued_keys(self.mirror.of_type(API_KEYS))
            products = api_products(resources, issued, time.time(), stream.labels)
            security = msgspec.structs.replace(security, api_products=products)
        return dataclasses.replace(own, security=security, telemetry=telemetry)

    def _own_routes(self, stream: ProxyStream, resources: Sequence[Resource]) -> Own:
        hello = stream.hello
        if hello.role == "vip":
            vips = assign_vips(services_of(resources), hello.vip_network)
            node = Node(
                workload=hello.workload,
                namespace=hello.namespace,
                service_account=stream.service_account,
                service=hello.workload,
            )
            return vip_part(resources, self.endpoints, vips, node)
        if hello.role == "gateway":
            spec = GatewaySpec(
                name=hello.workload,
                namespace=hello.namespace,
                http_port=hello.gateway_port,
                https_port=hello.gateway_https_port,
                passthrough_port=hello.gateway_passthrough_port,
                secrets_dir=hello.secrets_dir,
                address=hello.address,
                labels=dict(stream.labels),
                service_account=stream.service_account,
            )
            return gateway_part(resources, self.endpoints, spec)
        sidecar = SidecarSpec(
            workload=hello.workload,
            namespace=hello.namespace,
            service_account=stream.service_account,
            outbound_port=hello.outbound_port,
            inbound_port=hello.inbound_port,
            address=hello.address,
            mtls=self.security.mtls(hello.namespace, stream.labels) if self.roots else None,
            tcp_ports=dict(hello.tcp_ports),
        )
        index = self._index()
        if hello.app_port:
            selecting = index.selecting(hello.namespace, stream.labels)
            ports = sorted({port.port for service in selecting for port in service.spec.ports})
            sidecar = dataclasses.replace(sidecar, app_ports=dict.fromkeys(ports, hello.app_port))
        own = index.own_resources(hello.namespace, hello.workload, stream.labels)
        return sidecar_part(own, sidecar, stream.labels)


# The control plane's own records: leases and tokens route nothing.
_INTERNAL = frozenset(
    {
        ResourceType("gossamer.dev", "controlplanes"),
        ResourceType("gossamer.dev", "workloadtokens"),
        ResourceType("gossamer.dev", "apiquotas"),
        # Written by `up` as replicas and load change; no proxy reads them.
        ResourceType("", "pods"),
        ResourceType("", "events"),
        ResourceType("autoscaling", "horizontalpodautoscalers"),
    }
)


def pending_versions(streams: Iterable[ProxyStream]) -> int:
    """How many updates are sent and not yet answered (for tests and benchmarks)."""
    return sum(len(stream.pending) for stream in streams)


def _changed_hosts(old: EndpointIndex, new: EndpointIndex) -> frozenset[str]:
    """The service hosts whose endpoints differ between two indexes."""
    keys = old.keys() | new.keys()
    return frozenset(key[0] for key in keys if old.get(key) != new.get(key))
