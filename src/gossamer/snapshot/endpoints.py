"""Endpoints of services from WorkloadEntries: workloads outside Kubernetes, found by selector."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from gossamer.resources import Resource
from gossamer.resources.hosts import service_fqdn
from gossamer.resources.kinds.istio_networking import ServiceEntry, WorkloadEntry
from gossamer.snapshot.model import Endpoint
from gossamer.snapshot.translate_catalog import LabelIndex
from gossamer.snapshot.translate_clusters import EndpointIndex
from gossamer.snapshot.vips import services_of

__all__ = ["endpoint_index"]


@dataclass(frozen=True, slots=True)
class _Selecting:
    """A service that selects workloads by label, with its ports as (number, name, target)."""

    host: str
    namespace: str
    selector: Mapping[str, str]
    ports: tuple[tuple[int, str, int | str], ...]


IdentityOf = Callable[[WorkloadEntry], str]
"""The SPIFFE id a client should expect of an entry's sidecar, "" when it takes plaintext."""


def endpoint_index(
    resources: Sequence[Resource], identity_of: IdentityOf | None = None
) -> EndpointIndex:
    """The endpoints of every Service and ServiceEntry whose selector matches WorkloadEntries.

    Keyed by (service host, service port number), as the cluster translation reads them. An entry
    is in its own namespace's services only; one without an address, on a Unix socket, or that
    Istio's health checks report unhealthy gives none. Each list is sorted, so the same resources
    always give the same index. With `identity_of`, each endpoint says whom to expect at the
    other end of its mTLS connection.
    """
    entries = [
        resource
        for resource in resources
        if isinstance(resource, WorkloadEntry) and _reachable(resource)
    ]
    by_labels = LabelIndex((entry.namespace, entry.spec.labels, entry) for entry in entries)
    index: dict[tuple[str, int], set[Endpoint]] = {}
    for service in _selecting_services(resources):
        chosen = by_labels.select(service.namespace, service.selector)
        for number, name, target in service.ports:
            found = index.setdefault((service.host, number), set())
            for entry in chosen:
                port = _entry_port(entry, name, target)
                if port is not None:
                    identity = identity_of(entry) if identity_of is not None else ""
                    found.add(_endpoint(entry, port, identity))
    return {key: tuple(sorted(index[key], key=_order)) for key in sorted(index) if index[key]}


def _reachable(entry: WorkloadEntry) -> bool:
    # Without an address the workload is behind another network's gateway, and Unix domain
    # sockets are not reachable by the proxy's upstream connections.
    return bool(entry.spec.address) and not entry.spec.unix_socket and entry.healthy


def _selecting_services(resources: Sequence[Resource]) -> Iterator[_Selecting]:
    """Each Service, and each host of a ServiceEntry, that selects workloads by label."""
    for service in services_of(resources):
        spec = service.spec
        # An ExternalName Service resolves a name; a selector on it is not used.
        if spec.selector and spec.type != "ExternalName":
            yield _Selecting(
                service_fqdn(service.name, service.namespace),
                service.namespace,
                spec.selector,
                tuple((p.port, p.name or "", p.effective_target) for p in spec.ports),
            )
    for resource in resources:
        if isinstance(resource, ServiceEntry):
            selector = resource.spec.workload_selector
            if selector is not None and selector.labels:
                ports = tuple(
                    (p.number, p.name, p.target_port or p.number) for p in resource.spec.ports
                )
                for host in resource.spec.hosts:
                    yield _Selecting(host, resource.namespace, selector.labels, ports)


def _entry_port(entry: WorkloadEntry, name: str, target: int | str) -> int | None:
    """Where the entry takes a service port's traffic, or None when it does not declare it.

    The entry's own port for the service port's name wins; then a sidecar in front of it, which
    takes every port on one; then the service's target port, a named one looked up in the entry's
    ports as Kubernetes looks it up in a pod's.
    """
    ports = entry.spec.ports
    if name in ports:
        return ports[name]
    inbound = entry.inbound_port
    if inbound is not None:
        return inbound
    if isinstance(target, int):
        return target
    return ports.get(target)


def _endpoint(entry: WorkloadEntry, port: int, identity: str) -> Endpoint:
    spec = entry.spec
    assert spec.address is not None, "entries without an address are filtered out"
    return Endpoint(
        address=spec.address,
        port=port,
        weight=spec.weight or 1,
        zone=spec.locality or "",
        labels=tuple(sorted(spec.labels.items())),
        identity=identity,
    )


def _order(endpoint: Endpoint) -> tuple[str, int, str, tuple[tuple[str, str], ...], int]:
    return endpoint.address, endpoint.port, endpoint.zone, endpoint.labels, endpoint.weight
