"""The resources one proxy can see, indexed by the names routes and policies use for them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from gossamer.resources import Resource
from gossamer.resources.gateway_api_binding import GatewayApiIndex
from gossamer.resources.hosts import host_matches, qualify, service_fqdn
from gossamer.resources.kinds.apps import Workload
from gossamer.resources.kinds.core import Service, ServicePort
from gossamer.resources.kinds.ingress import Ingress, IngressV1Beta1
from gossamer.resources.kinds.istio_networking import (
    DestinationRule,
    Gateway,
    ServiceEntry,
    VirtualService,
    WorkloadEntrySpec,
)
from gossamer.snapshot.vips import services_of

# Istio's root namespace: configuration there applies to every namespace that has none of its own.
ROOT_NAMESPACE = "istio-system"
EXPORT_ANNOTATION = "networking.istio.io/exportTo"
# Protocols (by Istio's port naming) that are not HTTP; any other port is routed as HTTP.
_OPAQUE_PROTOCOLS = frozenset({"tcp", "tls", "https", "mongo", "mysql", "redis", "udp", "sctp"})
# Of those, the ones that are not carried over TCP at all.
_NOT_TCP = frozenset({"udp", "sctp"})


@dataclass(frozen=True, slots=True)
class Caller:
    """The proxy the catalog is built for: its namespace and its workload's labels."""

    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MeshPort:
    """A port of a mesh service; `target` is where the workload listens (number or name)."""

    number: int
    name: str
    target: int | str
    http: bool
    opaque: bool = False
    """Carried as bytes over TCP (Istio's `tcp`, `redis`, `mysql`, `mongo`, `tls`, ...)."""

    @property
    def target_number(self) -> int:
        """The workload port as a number: the target port, or the service port when it is
        named (a name resolves per pod)."""
        return self.target if isinstance(self.target, int) else self.number


@dataclass(frozen=True, slots=True)
class MeshService:
    """A host the mesh routes to: a Kubernetes Service or a host of a ServiceEntry."""

    host: str
    name: str
    namespace: str
    ports: tuple[MeshPort, ...]
    selector: Mapping[str, str] = field(default_factory=dict)
    entries: tuple[WorkloadEntrySpec, ...] = ()
    dns_name: str | None = None

    @property
    def http_ports(self) -> tuple[MeshPort, ...]:
        """The ports routed as HTTP."""
        return tuple(port for port in self.ports if port.http)

    @property
    def tcp_ports(self) -> tuple[MeshPort, ...]:
        """The opaque ports, carried as bytes."""
        return tuple(port for port in self.ports if port.opaque)

    @property
    def served_ports(self) -> tuple[MeshPort, ...]:
        """The ports the mesh carries: HTTP and opaque TCP (UDP and SCTP are not)."""
        return tuple(port for port in self.ports if port.http or port.opaque)


@dataclass(frozen=True, slots=True)
class Catalog:
    """Every resource visible to the caller (Istio's exportTo), and lookups across them."""

    caller: Caller
    services: tuple[MeshService, ...]
    virtual_services: tuple[VirtualService, ...]
    destination_rules: tuple[DestinationRule, ...]
    deployments: tuple[Workload, ...]
    gateways: tuple[Gateway, ...]
    ingresses: tuple[Ingress | IngressV1Beta1, ...]
    by_host: Mapping[str, MeshService]
    deployment_index: LabelIndex[Workload]
    gateway_api: GatewayApiIndex = field(default_factory=GatewayApiIndex)

    def resolve(self, host: str, namespace: str) -> str:
        """A host as a rule in `namespace` writes it, as the mesh knows it.

        A known host stays; a short name becomes the FQDN of a Service (`reviews.prod` too, when
        that Service exists); anything else with a dot is already a full name, as Istio reads it.
        """
        if host in self.by_host or "*" in host:
            return host
        fqdn = qualify(host, namespace)
        return fqdn if fqdn in self.by_host or "." not in host else host

    def mesh_virtual_services(self, host: str) -> tuple[VirtualService, ...]:
        """The VirtualServices that route `host` inside the mesh; exact hosts win over wildcards."""
        exact: list[VirtualService] = []
        wildcard: list[VirtualService] = []
        for service in self.virtual_services:
            gateways = service.spec.gateways
            if gateways and "mesh" not in gateways:
                continue
            hosts = [self.resolve(h, service.namespace) for h in service.spec.hosts]
            if host in hosts:
                exact.append(service)
            elif any(host_matches(pattern, host) for pattern in hosts):
                wildcard.append(service)
        return tuple(exact or wildcard)

    def destination_rule(self, service: MeshService) -> DestinationRule | None:
        """The DestinationRule for a service, looked up as Istio does.

        The caller's namespace first, then the service's, then the root namespace; within one,
        an exact host before the longest wildcard.
        """
        candidates = [rule for rule in self.destination_rules if self._rule_applies(rule, service)]
        if not candidates:
            return None
        return min(candidates, key=lambda rule: self._rule_rank(rule, service))

    def workloads(self, namespace: str, labels: Mapping[str, str]) -> list[Workload]:
        """The Deployments (StatefulSets, Jobs) in `namespace` whose pods carry all of `labels`."""
        return self.deployment_index.select(namespace, labels)

    def _rule_applies(self, rule: DestinationRule, service: MeshService) -> bool:
        selector = rule.spec.workload_selector
        if selector is not None and not (
            rule.namespace == self.caller.namespace
            and labels_match(selector.match_labels, self.caller.labels)
        ):
            return False
        return host_matches(self.resolve(rule.spec.host, rule.namespace), service.host)

    def _rule_rank(self, rule: DestinationRule, service: MeshService) -> tuple[int, int, str, str]:
        order = (self.caller.namespace, service.namespace, ROOT_NAMESPACE)
        place = order.index(rule.namespace) if rule.namespace in order else len(order)
        host = self.resolve(rule.spec.host, rule.namespace)
        specificity = 0 if host == service.host else -len(host)
        return place, specificity, rule.namespace, rule.name


_Labelled = TypeVar("_Labelled")


class LabelIndex(Generic[_Labelled]):
    """Items by (namespace, label key, value), so that a selector looks at few candidates.

    With a thousand services each selecting its own Deployment, matching every selector against
    every Deployment is a million comparisons per translation; this makes it one lookup each.
    """

    def __init__(self, items: Iterable[tuple[str, Mapping[str, str], _Labelled]]) -> None:
        self._by_label: dict[tuple[str, str, str], list[tuple[Mapping[str, str], _Labelled]]] = {}
        self._by_namespace: dict[str, list[tuple[Mapping[str, str], _Labelled]]] = {}
        for namespace, labels, item in items:
            self._by_namespace.setdefault(namespace, []).append((labels, item))
            for key, value in labels.items():
                self._by_label.setdefault((namespace, key, value), []).append((labels, item))

    def __repr__(self) -> str:
        return f"<LabelIndex {len(self._by_namespace)} namespaces>"

    def select(self, namespace: str, selector: Mapping[str, str]) -> list[_Labelled]:
        """The items in `namespace` whose labels carry all of `selector`, in insertion order."""
        if not selector:
            return [item for _, item in self._by_namespace.get(namespace, ())]
        key, value = next(iter(selector.items()))
        candidates = self._by_label.get((namespace, key, value), ())
        return [item for labels, item in candidates if labels_match(selector, labels)]


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether `labels` carry every key and value of `selector`."""
    return all(labels.get(key) == value for key, value in selector.items())


def pod_labels(resources: Sequence[Resource], workload: str, namespace: str) -> dict[str, str]:
    """The pod labels of the Deployment named `workload`, or none when it is not given."""
    for resource in resources:
        if (
            isinstance(resource, Workload)
            and resource.name == workload
            and resource.namespace == namespace
        ):
            return dict(resource.pod_labels)
    return {}


def build_catalog(resources: Sequence[Resource], caller: Caller) -> Catalog:
    """Index the resources visible from the caller's namespace."""
    services: dict[str, MeshService] = {}
    for service in _mesh_services(resources, caller.namespace):
        services.setdefault(service.host, service)
    visible = [r for r in resources if _visible(r, caller.namespace)]
    deployments = tuple(r for r in resources if isinstance(r, Workload))
    return Catalog(
        caller=caller,
        services=tuple(services[host] for host in sorted(services)),
        virtual_services=tuple(r for r in visible if isinstance(r, VirtualService)),
        destination_rules=tuple(r for r in visible if isinstance(r, DestinationRule)),
        deployments=deployments,
        gateways=tuple(r for r in resources if isinstance(r, Gateway)),
        ingresses=tuple(r for r in resources if isinstance(r, Ingress | IngressV1Beta1)),
        by_host=services,
        deployment_index=LabelIndex((d.namespace, d.pod_labels, d) for d in deployments),
        gateway_api=GatewayApiIndex.of(resources),
    )


def _mesh_services(resources: Sequence[Resource], namespace: str) -> Iterator[MeshService]:
    # Kubernetes Services come first so that a ServiceEntry cannot take over a Service's host.
    for service in services_of(resources):
        if _visible(service, namespace):
            yield _from_service(service)
    for resource in resources:
        if isinstance(resource, ServiceEntry) and _visible(resource, namespace):
            yield from _from_entry(resource)


def _from_service(service: Service) -> MeshService:
    spec = service.spec
    ports = tuple(
        MeshPort(
            number=port.port,
            name=port.name or "",
            target=port.effective_target,
            http=port.protocol == "TCP" and _speaks_http(_port_protocol(port)),
            opaque=is_opaque_tcp(port),
        )
        for port in spec.ports
    )
    return MeshService(
        host=service_fqdn(service.name, service.namespace),
        name=service.name,
        namespace=service.namespace,
        ports=ports,
        selector=spec.selector or {},
        dns_name=spec.external_name if spec.type == "ExternalName" else None,
    )


def _from_entry(entry: ServiceEntry) -> Iterator[MeshService]:
    spec = entry.spec
    dns = spec.resolution in ("DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS")
    ports = tuple(
        MeshPort(
            port.number,
            port.name,
            port.target_port or port.number,
            _speaks_http(port.protocol),
            opaque=not _speaks_http(port.protocol)
            and (port.protocol or "").lower() not in _NOT_TCP,
        )
        for port in spec.ports
    )
    for host in spec.hosts:
        resolvable = dns and "*" not in host
        # Resolution NONE forwards to the address the caller dialled, which a proxy that is
        # told the host only cannot know: such entries have no endpoints to route to.
        if not (spec.endpoints or spec.workload_selector or resolvable):
            continue
        yield MeshService(
            host=host,
            name=host,
            namespace=entry.namespace,
            ports=ports,
            selector=spec.workload_selector.labels if spec.workload_selector else {},
            entries=tuple(spec.endpoints),
            dns_name=host if resolvable and not spec.endpoints else None,
        )


def is_opaque_tcp(port: ServicePort) -> bool:
    """Whether a Service port is carried as bytes: TCP, and named or declared (appProtocol)
    as a protocol that is not HTTP, as Istio selects protocols."""
    return port.protocol == "TCP" and not _speaks_http(_port_protocol(port))


def opaque_port_names(
    resources: Sequence[Resource], namespace: str, labels: Mapping[str, str]
) -> tuple[str, ...]:
    """The names of the opaque TCP ports of the Services in `namespace` that select pods with
    these labels, sorted, once each (an unnamed port has no key in a WorkloadEntry's ports)."""
    names = {
        port.name
        for service in services_of(resources)
        if service.namespace == namespace
        and service.spec.selector
        and service.spec.type != "ExternalName"
        and labels_match(service.spec.selector, labels)
        for port in service.spec.ports
        if port.name and is_opaque_tcp(port)
    }
    return tuple(sorted(names))


def _port_protocol(port: ServicePort) -> str:
    return port.app_protocol or (port.name or "").split("-")[0]


def _speaks_http(protocol: str | None) -> bool:
    return (protocol or "").lower() not in _OPAQUE_PROTOCOLS


def _visible(resource: Resource, namespace: str) -> bool:
    if isinstance(resource, VirtualService | DestinationRule | ServiceEntry):
        export_to = list(resource.spec.export_to)
    elif isinstance(resource, Service):
        annotation = resource.metadata.annotations.get(EXPORT_ANNOTATION, "")
        export_to = [part.strip() for part in annotation.split(",") if part.strip()]
    else:
        return True
    if not export_to or "*" in export_to:
        return True
    return namespace in export_to or ("." in export_to and resource.namespace == namespace)
