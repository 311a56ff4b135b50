"""Clusters from Services, ServiceEntries and DestinationRules: endpoints, subsets and policies."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from gossamer.resources.kinds.istio_networking import (
    ConnectionPoolSettings,
    LoadBalancerSettings,
    TrafficPolicy,
)
from gossamer.resources.kinds.istio_networking import (
    OutlierDetection as IstioOutlierDetection,
)
from gossamer.resources.kinds.istio_networking import (
    RetryBudget as IstioRetryBudget,
)
from gossamer.snapshot.durations import seconds
from gossamer.snapshot.model import (
    Cluster,
    Endpoint,
    HashPolicy,
    LbPolicy,
    OutlierDetection,
    PoolLimits,
    RetryBudget,
    ServiceLabels,
)
from gossamer.snapshot.translate_catalog import Catalog, MeshPort, MeshService, labels_match

EndpointIndex = Mapping[tuple[str, int], Sequence[Endpoint]]
UNKNOWN = "unknown"
_SIMPLE_POLICIES: dict[str, LbPolicy] = {
    "ROUND_ROBIN": "ROUND_ROBIN",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",
    "RANDOM": "RANDOM",
    "PEAK_EWMA": "PEAK_EWMA",
}
# Istio's default since 1.14, and the model's.
_DEFAULT_POLICY: LbPolicy = "LEAST_REQUEST"
# The model's own default parts: msgspec leaves a default out of the JSON only when it is the same
# object, so unchanged parts are these, and a dump stays as short as a hand-written snapshot.
_DEFAULTS = Cluster(name="")
ISTIO_MAX_RETRIES = 2**32 - 1


@dataclass(frozen=True, slots=True)
class _Policy:
    """The parts of an Istio TrafficPolicy that shape a cluster, after merging."""

    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: IstioOutlierDetection | None = None
    retry_budget: IstioRetryBudget | None = None


def cluster_name(port: int, subset: str, host: str) -> str:
    """Istio's outbound cluster name: `outbound|9080|v1|reviews.default.svc.cluster.local`."""
    return f"outbound|{port}|{subset}|{host}"


def outbound_clusters(catalog: Catalog, endpoints: EndpointIndex) -> Iterator[Cluster]:
    """A cluster per HTTP and opaque TCP port of every service, and one per subset."""
    for service in catalog.services:
        yield from service_clusters(catalog, service, endpoints)


def service_clusters(
    catalog: Catalog, service: MeshService, endpoints: EndpointIndex
) -> Iterator[Cluster]:
    """One service's clusters: a cluster per HTTP and opaque TCP port, and one per subset.

    Their names depend on the catalog alone; their endpoints (and the labels that fall back on
    the endpoints') on `endpoints` too, so a change of endpoints alone rebuilds only these."""
    rule = catalog.destination_rule(service)
    top = rule.spec.traffic_policy if rule else None
    for port in service.served_ports:
        found = _endpoints(service, port, endpoints)
        yield _cluster(
            cluster_name(port.number, "", service.host),
            found,
            merged_policy(top, None, port.number),
            _labels(catalog, service, {}, found),
        )
        for subset in rule.spec.subsets if rule else ():
            chosen = tuple(e for e in found if labels_match(subset.labels, dict(e.labels)))
            yield _cluster(
                cluster_name(port.number, subset.name, service.host),
                chosen,
                merged_policy(top, subset.traffic_policy, port.number),
                _labels(catalog, service, subset.labels, chosen),
            )


def placeholder_cluster(name: str) -> Cluster:
    """A cluster a route names but nothing defines (unknown host or subset): it answers 503."""
    return Cluster(name=name, labels=ServiceLabels(service=name.rpartition("|")[2] or UNKNOWN))


def merged_policy(top: TrafficPolicy | None, subset: TrafficPolicy | None, port: int) -> _Policy:
    """A subset's policy over the rule's, field by field, as Istio merges them for one port.

    Port-level settings replace the level they belong to wholesale: a field they leave out
    takes its default, not the value around it.
    """
    base, _ = _at_port(top, port)
    if subset is None:
        return base
    override, wholesale = _at_port(subset, port)

    def pick(mine: Any, theirs: Any) -> Any:
        return mine if mine is not None or wholesale else theirs

    return _Policy(
        load_balancer=pick(override.load_balancer, base.load_balancer),
        connection_pool=pick(override.connection_pool, base.connection_pool),
        outlier_detection=pick(override.outlier_detection, base.outlier_detection),
        retry_budget=override.retry_budget or base.retry_budget,
    )


def _at_port(policy: TrafficPolicy | None, port: int) -> tuple[_Policy, bool]:
    if policy is None:
        return _Policy(), False
    for setting in policy.port_level_settings:
        if setting.port is not None and setting.port.number == port:
            return _Policy(
                setting.load_balancer,
                setting.connection_pool,
                setting.outlier_detection,
                policy.retry_budget,
            ), True
    return _Policy(
        policy.load_balancer,
        policy.connection_pool,
        policy.outlier_detection,
        policy.retry_budget,
    ), False


def _endpoints(service: MeshService, port: MeshPort, index: EndpointIndex) -> tuple[Endpoint, ...]:
    target = port.target if isinstance(port.target, int) else port.number
    if service.entries:
        return tuple(
            Endpoint(
                address=entry.address,
                port=entry.ports.get(port.name, target),
                weight=entry.weight or 1,
                zone=entry.locality or "",
                labels=tuple(sorted(entry.labels.items())),
            )
            for entry in service.entries
            # Unix domain sockets are not reachable by this proxy's upstream connections.
            if entry.address and not entry.address.startswith("unix://")
        )
    if service.dns_name is not None:
        return (Endpoint(address=service.dns_name, port=target),)
    found = index.get((service.host, port.number), ())
    return tuple(sorted(found, key=lambda e: (e.address, e.port, e.zone, e.labels)))


def _cluster(
    name: str, endpoints: tuple[Endpoint, ...], policy: _Policy, labels: ServiceLabels
) -> Cluster:
    lb_policy, hash_policy = _balancer(policy.load_balancer)
    return Cluster(
        name=name,
        endpoints=endpoints,
        lb_policy=lb_policy,
        hash_policy=hash_policy,
        limits=_limits(policy.connection_pool),
        outlier_detection=_outlier_detection(policy.outlier_detection),
        retry_budget=_retry_budget(policy.retry_budget),
        labels=labels,
    )


def _balancer(settings: LoadBalancerSettings | None) -> tuple[LbPolicy, HashPolicy | None]:
    if settings is None:
        return _DEFAULT_POLICY, None
    hashing = settings.consistent_hash
    if hashing is None:
        return _SIMPLE_POLICIES.get(settings.simple or "", _DEFAULT_POLICY), None
    header = hashing.http_header_name
    return "RING_HASH", HashPolicy(
        header=header.lower() if header else None,
        cookie=hashing.http_cookie.name if hashing.http_cookie else None,
        query_param=hashing.http_query_parameter_name,
        source_ip=bool(hashing.use_source_ip),
    )


def _limits(pool: ConnectionPoolSettings | None) -> PoolLimits:
    changes: dict[str, float] = {}
    tcp, http = (pool.tcp, pool.http) if pool else (None, None)
    # As in Istio, a count of 0 means "not set": the default applies.
    counts = {
        "max_connections": tcp.max_connections if tcp else None,
        "max_pending": http.http1_max_pending_requests if http else None,
        "max_requests": http.http2_max_requests if http else None,
        "max_requests_per_connection": http.max_requests_per_connection if http else None,
        "max_retries": http.max_retries if http else None,
    }
    changes.update({name: value for name, value in counts.items() if value})
    # Istio leaves concurrent retries unbounded unless maxRetries says otherwise (the retry
    # budget still keeps them to a share of the traffic); Envoy's own default is 3.
    changes.setdefault("max_retries", ISTIO_MAX_RETRIES)
    if tcp is not None and tcp.connect_timeout is not None:
        changes["connect_timeout"] = seconds(tcp.connect_timeout)
    if http is not None and http.idle_timeout is not None:
        changes["idle_timeout"] = seconds(http.idle_timeout)
    if tcp is not None and tcp.idle_timeout is not None:
        changes["tcp_idle_timeout"] = seconds(tcp.idle_timeout)
    return msgspec.structs.replace(_DEFAULTS.limits, **changes)


def _outlier_detection(settings: IstioOutlierDetection | None) -> OutlierDetection | None:
    if settings is None:
        return None
    changes: dict[str, float] = {}
    if settings.consecutive_errors:
        # Istio's deprecated consecutiveErrors counts gateway errors only.
        changes["consecutive_gateway_errors"] = settings.consecutive_errors
        changes["consecutive_5xx"] = 0
    if settings.consecutive5xx_errors is not None:
        changes["consecutive_5xx"] = settings.consecutive5xx_errors
    if settings.consecutive_gateway_errors is not None:
        changes["consecutive_gateway_errors"] = settings.consecutive_gateway_errors
    if settings.interval is not None:
        changes["interval"] = seconds(settings.interval)
    if settings.base_ejection_time is not None:
        changes["base_ejection_time"] = seconds(settings.base_ejection_time)
    if settings.max_ejection_percent is not None:
        changes["max_ejection_percent"] = settings.max_ejection_percent
    return msgspec.structs.replace(OutlierDetection(), **changes)


def _retry_budget(budget: IstioRetryBudget | None) -> RetryBudget:
    default = _DEFAULTS.retry_budget
    if budget is None:
        return default
    return RetryBudget(
        percent=default.percent if budget.percent is None else budget.percent,
        min_concurrency=(
            default.min_concurrency
            if budget.min_retry_concurrency is None
            else budget.min_retry_concurrency
        ),
    )


def _labels(
    catalog: Catalog,
    service: MeshService,
    subset: Mapping[str, str],
    endpoints: Iterable[Endpoint],
) -> ServiceLabels:
    """Istio's destination_* metric labels, from the Deployments (or endpoints) behind a cluster."""
    selector = {**service.selector, **subset} if service.selector else {}
    workloads = catalog.workloads(service.namespace, selector) if selector else []
    pods = [w.pod_labels for w in workloads] or [dict(e.labels) for e in endpoints]
    return ServiceLabels(
        service=service.host,
        service_name=service.name,
        namespace=service.namespace,
        workload=_only(w.name for w in workloads),
        version=_only(canonical_revision(labels) for labels in pods),
    )


def canonical_name(labels: Mapping[str, str], fallback: str) -> str:
    """Istio's canonical service name of a workload, from its labels."""
    for key in ("service.istio.io/canonical-name", "app.kubernetes.io/name", "app"):
        if key in labels:
            return labels[key]
    return fallback


def canonical_revision(labels: Mapping[str, str]) -> str:
    """Istio's canonical revision (the `version` of metrics) of a workload, from its labels."""
    for key in ("service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"):
        if key in labels:
            return labels[key]
    return UNKNOWN


def _only(values: Iterable[str]) -> str:
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else UNKNOWN
