"""Where Gateway API routes attach and whether their backends resolve: the route status, computed.

Both `validate` (which reports a condition that is not True at its field) and the translation
(which routes only what attached) read these decisions, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from gossamer.resources.base import Labels, Resource
from gossamer.resources.hosts import host_matches
from gossamer.resources.kinds.config import Namespace
from gossamer.resources.kinds.core import Service
from gossamer.resources.kinds.gateway_api import (
    GROUP,
    HTTP_PROTOCOLS,
    SERVED_CLASSES,
    BackendObjectReference,
    Gateway,
    GatewayClass,
    Listener,
    ParentReference,
    ReferenceGrant,
)
from gossamer.resources.kinds.gateway_api_routes import HTTPRoute
from gossamer.resources.yamlsource import FieldPath

NAMESPACE_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True, slots=True)
class Condition:
    """A status condition as the Gateway API writes it: type, True or False, reason, message."""

    type: str
    status: bool
    reason: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class ListenerBinding:
    """A listener a route attached to, and the hostnames the two have in common."""

    gateway: Gateway
    listener: Listener
    hostnames: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ParentBinding:
    """One parentRef of a route: what it attached to, and its Accepted condition."""

    index: int
    ref: ParentReference
    accepted: Condition
    listeners: tuple[ListenerBinding, ...] = ()
    service: Service | None = None


@dataclass(frozen=True, slots=True)
class GatewayApiIndex:
    """The Gateway API objects of a set of resources, and the Services routes may name."""

    classes: Mapping[str, GatewayClass] = field(default_factory=dict)
    gateways: Mapping[tuple[str, str], Gateway] = field(default_factory=dict)
    routes: tuple[HTTPRoute, ...] = ()
    grants: tuple[ReferenceGrant, ...] = ()
    namespace_labels: Mapping[str, Labels] = field(default_factory=dict)
    services: Mapping[tuple[str, str], Service] = field(default_factory=dict)
    service_routes: Mapping[tuple[str, str], tuple[tuple[int | None, HTTPRoute], ...]] = field(
        default_factory=dict
    )
    """By Service (namespace, name): the routes attached to it and the port each names."""

    @classmethod
    def of(cls, resources: Iterable[Resource]) -> GatewayApiIndex:
        """Index the Gateway API objects, Namespaces and Services among `resources`."""
        classes: dict[str, GatewayClass] = {}
        gateways: dict[tuple[str, str], Gateway] = {}
        routes: list[HTTPRoute] = []
        grants: list[ReferenceGrant] = []
        labels: dict[str, Labels] = {}
        services: dict[tuple[str, str], Service] = {}
        for resource in resources:
            if isinstance(resource, GatewayClass):
                classes.setdefault(resource.name, resource)
            elif isinstance(resource, Gateway):
                gateways.setdefault((resource.namespace, resource.name), resource)
            elif isinstance(resource, HTTPRoute):
                routes.append(resource)
            elif isinstance(resource, ReferenceGrant):
                grants.append(resource)
            elif isinstance(resource, Namespace):
                labels[resource.name] = dict(resource.metadata.labels)
            elif isinstance(resource, Service):
                services.setdefault((resource.namespace, resource.name), resource)
        index = cls(classes, gateways, tuple(routes), tuple(grants), labels, services)
        attached: dict[tuple[str, str], list[tuple[int | None, HTTPRoute]]] = {}
        for route in index.routes:
            for parent in index.parents(route):
                if parent.service is not None:
                    key = (parent.service.namespace, parent.service.name)
                    attached.setdefault(key, []).append((parent.ref.port, route))
        return replace(index, service_routes={k: tuple(v) for k, v in attached.items()})

    def served(self, gateway: Gateway) -> bool:
        """Whether the mesh's ingress gateway serves this Gateway (docs/gateway-api.md)."""
        name = gateway.spec.gateway_class_name
        defined = self.classes.get(name)
        if defined is not None:
            return defined.served
        return name in SERVED_CLASSES

    def served_gateways(self) -> list[Gateway]:
        """The Gateways the ingress gateway serves, in namespace/name order."""
        return [
            self.gateways[key] for key in sorted(self.gateways) if self.served(self.gateways[key])
        ]

    def parents(self, route: HTTPRoute) -> list[ParentBinding]:
        """Each parentRef of the route, bound or not, with the reason."""
        return [self._parent(route, index, ref) for index, ref in enumerate(route.spec.parent_refs)]

    def granted(
        self, source: tuple[str, str, str], namespace: str, target: tuple[str, str, str]
    ) -> bool:
        """Whether a ReferenceGrant in `namespace` lets `source` (group, kind, namespace) refer to
        `target` (group, kind, name) there."""
        return any(g.namespace == namespace and g.grants(source, target) for g in self.grants)

    def backend_problem(self, route: HTTPRoute, ref: BackendObjectReference) -> Condition | None:
        """Why a backendRef does not resolve (ResolvedRefs False), or None when it does."""
        namespace = ref.namespace or route.namespace
        where = f"{namespace}/{ref.name}"
        if not ref.is_service:
            kind = f"{ref.group}/{ref.kind}" if ref.group else ref.kind
            return _unresolved("InvalidKind", f"backend {where} is a {kind}, not a Service")
        if namespace != route.namespace and not self.granted(
            (GROUP, "HTTPRoute", route.namespace), namespace, ("", "Service", ref.name)
        ):
            return _unresolved(
                "RefNotPermitted",
                f"no ReferenceGrant in namespace {namespace} lets HTTPRoutes of "
                f"{route.namespace} refer to Service {ref.name}",
            )
        if (namespace, ref.name) not in self.services:
            return _unresolved("BackendNotFound", f"no Service {where} in the files")
        return None

    def _parent(self, route: HTTPRoute, index: int, ref: ParentReference) -> ParentBinding:
        namespace = ref.namespace or route.namespace
        if ref.is_service:
            return self._service_parent(index, ref, namespace)
        if not ref.is_gateway:
            return ParentBinding(
                index, ref, _refused("NoMatchingParent", f"a parent of kind {ref.kind} is not read")
            )
        gateway = self.gateways.get((namespace, ref.name))
        if gateway is None:
            return ParentBinding(
                index, ref, _refused("NoMatchingParent", f"no Gateway {namespace}/{ref.name}")
            )
        named = [
            listener
            for listener in gateway.spec.listeners
            if ref.section_name in (None, listener.name) and ref.port in (None, listener.port)
        ]
        if not named:
            return ParentBinding(
                index,
                ref,
                _refused(
                    "NoMatchingParent", f"Gateway {namespace}/{ref.name} has no such listener"
                ),
            )
        allowed = [listener for listener in named if self._allows(gateway, listener, route)]
        if not allowed:
            return ParentBinding(
                index,
                ref,
                _refused(
                    "NotAllowedByListeners",
                    f"no listener of Gateway {namespace}/{ref.name} takes HTTPRoutes "
                    f"of namespace {route.namespace}",
                ),
            )
        bound = tuple(
            ListenerBinding(gateway, listener, hosts)
            for listener in allowed
            if (hosts := intersect(listener.hostname, route.spec.hostnames))
        )
        if not bound:
            return ParentBinding(
                index,
                ref,
                _refused(
                    "NoMatchingListenerHostname",
                    f"no hostname of the route is one a listener of Gateway "
                    f"{namespace}/{ref.name} serves",
                ),
            )
        return ParentBinding(index, ref, Condition("Accepted", True, "Accepted"), bound)

    def _service_parent(self, index: int, ref: ParentReference, namespace: str) -> ParentBinding:
        service = self.services.get((namespace, ref.name))
        if service is None:
            return ParentBinding(
                index, ref, _refused("NoMatchingParent", f"no Service {namespace}/{ref.name}")
            )
        if ref.port is not None and all(p.port != ref.port for p in service.spec.ports):
            return ParentBinding(
                index,
                ref,
                _refused(
                    "NoMatchingParent", f"Service {namespace}/{ref.name} has no port {ref.port}"
                ),
            )
        return ParentBinding(index, ref, Condition("Accepted", True, "Accepted"), service=service)

    def _allows(self, gateway: Gateway, listener: Listener, route: HTTPRoute) -> bool:
        if listener.protocol not in HTTP_PROTOCOLS:
            return False
        allowed = listener.allowed_routes
        kinds = allowed.kinds if allowed is not None else []
        if kinds and not any(k.kind == "HTTPRoute" and k.group in (None, GROUP) for k in kinds):
            return False
        policy = allowed.namespaces if allowed is not None else None
        scope = (policy.from_ if policy is not None else None) or "Same"
        if scope == "All":
            return True
        if scope == "Same":
            return route.namespace == gateway.namespace
        if scope == "Selector" and policy is not None and policy.selector is not None:
            labels = {**self.namespace_labels.get(route.namespace, {})}
            labels[NAMESPACE_LABEL] = route.namespace
            return policy.selector.matches(labels)
        return False


def intersect(listener_host: str | None, route_hosts: Iterable[str]) -> tuple[str, ...]:
    """The hostnames a listener and a route both serve, the more specific of each pair.

    A listener without a hostname takes any; a route without hostnames takes the listener's.
    """
    hosts = list(route_hosts)
    if not hosts:
        return (listener_host or "*",)
    if listener_host is None:
        return tuple(dict.fromkeys(hosts))
    found: list[str] = []
    for host in hosts:
        if host_matches(listener_host, host):
            found.append(host)
        elif host_matches(host, listener_host):
            found.append(listener_host)
    return tuple(dict.fromkeys(found))


def route_conditions(
    index: GatewayApiIndex, route: HTTPRoute
) -> Iterator[tuple[FieldPath, Condition]]:
    """Every condition of the route that is not True, with the field it is about."""
    for parent in index.parents(route):
        if not parent.accepted.status:
            yield ("spec", "parentRefs", parent.index), parent.accepted
    for r, rule in enumerate(route.spec.rules):
        for b, backend in enumerate(rule.backend_refs):
            problem = index.backend_problem(route, backend)
            if problem is not None:
                yield ("spec", "rules", r, "backendRefs", b), problem
        for f, item in enumerate(rule.filters):
            mirror = item.request_mirror
            if mirror is not None:
                problem = index.backend_problem(route, mirror.backend_ref)
                if problem is not None:
                    where = ("spec", "rules", r, "filters", f, "requestMirror", "backendRef")
                    yield where, problem


def _refused(reason: str, message: str) -> Condition:
    return Condition("Accepted", False, reason, message)


def _unresolved(reason: str, message: str) -> Condition:
    return Condition("ResolvedRefs", False, reason, message)
