"""Virtual hosts of an ingress gateway: Ingress paths, Istio and Gateway API Gateways' routes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import msgspec

from gossamer.resources.hosts import host_matches, service_fqdn
from gossamer.resources.kinds.ingress import Ingress, IngressRoute, IngressV1Beta1
from gossamer.resources.kinds.istio_networking import Gateway, Server, VirtualService
from gossamer.snapshot.model import (
    MatchKind,
    Redirect,
    Route,
    RouteMatch,
    StringMatch,
    VirtualHost,
    WeightedCluster,
)
from gossamer.snapshot.translate_catalog import Catalog, labels_match
from gossamer.snapshot.translate_clusters import cluster_name
from gossamer.snapshot.translate_gateway_api import gateway_api_hosts
from gossamer.snapshot.translate_routes import (
    DEFAULT_RETRY,
    RouteContext,
    virtual_service_routes,
)

# Gateway server protocols this plain-HTTP listener serves.
_HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB"})
# Kubernetes path types; ImplementationSpecific (or none, in v1beta1) matches as a plain prefix.
_PATH_KINDS: dict[str, MatchKind] = {"Exact": "exact", "Prefix": "path_prefix"}
_DEFAULT_BACKENDS = (("spec", "defaultBackend"), ("spec", "backend"))


@dataclass(frozen=True, slots=True)
class _Binding:
    """A host a Gateway server serves and the VirtualServices bound to it there."""

    host: str
    services: tuple[VirtualService, ...]
    https_redirect: bool


def gateway_virtual_hosts(
    catalog: Catalog, labels: Mapping[str, str], http_port: int
) -> tuple[VirtualHost, ...]:
    """Every host the gateway serves, most specific first, each with its routes in order."""
    routes: dict[str, list[Route]] = {}
    for host, host_routes in _istio_routes(catalog, labels):
        routes.setdefault(host, []).extend(host_routes)
    for host, host_routes in _ingress_routes(catalog):
        routes.setdefault(host, []).extend(host_routes)
    for host, host_routes in gateway_api_hosts(catalog.gateway_api):
        routes.setdefault(host, []).extend(host_routes)
    return tuple(
        VirtualHost(name=host, domains=_domains(host, http_port), routes=tuple(routes[host]))
        for host in sorted(routes, key=_specificity)
        if routes[host]
    )


def _specificity(host: str) -> tuple[int, str]:
    if host == "*":
        return 2, host
    return (1 if host.startswith("*") else 0), host


def _domains(host: str, port: int) -> tuple[str, ...]:
    if "*" in host:
        return (host,)
    return host, f"{host}:{port}"


def _istio_routes(
    catalog: Catalog, labels: Mapping[str, str]
) -> Iterator[tuple[str, tuple[Route, ...]]]:
    gateways = [g for g in catalog.gateways if labels_match(g.spec.selector, labels)]
    keys = frozenset(f"{g.namespace}/{g.name}" for g in gateways)
    servers = [(g, s) for g in gateways for s in g.spec.servers if _serves_http(s)]
    ports = frozenset(server.port.number for _, server in servers)
    context = RouteContext(catalog=catalog, gateways=keys, ports=ports)
    for binding in _bindings(catalog, servers):
        if binding.https_redirect:
            yield binding.host, (_https_redirect(binding.host),)
        else:
            yield binding.host, virtual_service_routes(binding.services, context)


def _serves_http(server: Server) -> bool:
    return server.port.protocol.upper() in _HTTP_PROTOCOLS


def _bindings(catalog: Catalog, servers: list[tuple[Gateway, Server]]) -> list[_Binding]:
    """For each host the servers serve, the VirtualServices bound to it, in resource order."""
    found: dict[str, list[VirtualService]] = {}
    redirects: set[str] = set()
    for server, host, service in bound_hosts(catalog, servers):
        services = found.setdefault(host, [])
        if service not in services:
            services.append(service)
        if server.tls is not None and server.tls.https_redirect:
            redirects.add(host)
    return [_Binding(host, tuple(found[host]), host in redirects) for host in found]


def bound_hosts(
    catalog: Catalog, servers: list[tuple[Gateway, Server]]
) -> Iterator[tuple[Server, str, VirtualService]]:
    """Each host both a server and a VirtualService bound to its Gateway name, with the two."""
    for gateway, server in servers:
        key = f"{gateway.namespace}/{gateway.name}"
        for entry in server.hosts:
            allowed, _, pattern = entry.rpartition("/")
            for service in catalog.virtual_services:
                if not (_binds(service, key) and _namespace_allowed(allowed, gateway, service)):
                    continue
                for written in service.spec.hosts:
                    host = _narrower(pattern, catalog.resolve(written, service.namespace))
                    if host is not None:
                        yield server, host, service


def _binds(service: VirtualService, gateway_key: str) -> bool:
    namespace = service.namespace
    return any(
        (name if "/" in name else f"{namespace}/{name}") == gateway_key
        for name in service.spec.gateways
    )


def _namespace_allowed(allowed: str, gateway: Gateway, service: VirtualService) -> bool:
    """A server host `ns/host` takes VirtualServices of `ns` only (`.` its own, `*` any)."""
    if allowed in ("", "*"):
        return True
    if allowed == ".":
        return service.namespace == gateway.namespace
    return service.namespace == allowed


def _narrower(server_host: str, service_host: str) -> str | None:
    """The host two patterns both cover, the more specific of them, or None if they are apart."""
    if host_matches(server_host, service_host):
        return service_host
    if host_matches(service_host, server_host):
        return server_host
    return None


def _https_redirect(host: str) -> Route:
    return Route(name=f"https-redirect/{host}", redirect=Redirect(status=301, scheme="https"))


def _ingress_routes(catalog: Catalog) -> Iterator[tuple[str, tuple[Route, ...]]]:
    """Per host, the paths of every Ingress in Kubernetes order: longest first, Exact before Prefix.

    A default backend answers what no path matches, on every host of its Ingress and on any other.
    """
    ranked: dict[str, list[tuple[tuple[int, int, int, int], Route]]] = {}
    order = 0
    for ingress in catalog.ingresses:
        rules = list(ingress.routes())
        every_host = {rule.host or "*" for rule in rules} | {"*"}
        for rule in rules:
            order += 1
            route = _ingress_route(catalog, ingress, rule)
            if route is None:
                continue
            hosts = every_host if _is_default(rule) else {rule.host or "*"}
            for host in hosts:
                ranked.setdefault(host, []).append((_path_rank(rule, order), route))
    for host, routes in ranked.items():
        yield host, tuple(route for _, route in sorted(routes, key=lambda item: item[0]))


def _path_rank(rule: IngressRoute, order: int) -> tuple[int, int, int, int]:
    if rule.http_path is None:
        return 1, 0, 0, order
    return 0, -len(rule.http_path), 0 if rule.path_type == "Exact" else 1, order


def _is_default(rule: IngressRoute) -> bool:
    return rule.path[:2] in _DEFAULT_BACKENDS


def _ingress_route(
    catalog: Catalog, ingress: Ingress | IngressV1Beta1, rule: IngressRoute
) -> Route | None:
    if rule.service is None or rule.port is None:
        return None
    host = service_fqdn(rule.service, ingress.namespace)
    port = _backend_port(catalog, host, rule.port)
    if port is None:
        return None
    # Named after where it is written: `rules/0/paths/2`, or `defaultBackend`.
    where = "defaultBackend" if _is_default(rule) else f"rules/{rule.path[2]}/paths/{rule.path[5]}"
    route = Route(
        name=f"ingress/{ingress.namespace}/{ingress.name}/{where}",
        clusters=(WeightedCluster(cluster=cluster_name(port, "", host)),),
        retries=DEFAULT_RETRY,
    )
    if rule.http_path is None:
        return route
    kind = _PATH_KINDS.get(rule.path_type, "prefix")
    return msgspec.structs.replace(
        route, match=RouteMatch(path=StringMatch(kind=kind, value=rule.http_path))
    )


def _backend_port(catalog: Catalog, host: str, port: int | str) -> int | None:
    """A backend's Service port: a number as given, a name looked up among the Service's ports."""
    if isinstance(port, int):
        return port
    service = catalog.by_host.get(host)
    named = [p.number for p in service.ports if p.name == port] if service else []
    return named[0] if named else None
