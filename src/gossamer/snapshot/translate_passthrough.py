"""TLS passthrough at the ingress gateway: Istio Gateway servers with `tls.mode: PASSTHROUGH`
and the VirtualService `tls` rules bound to them, as SNI routes of one opaque TCP listener.

A VirtualService bound to such a Gateway (by `gateways`, for a host the server serves) routes
the connections whose ClientHello names one of a match's `sniHosts`; `port` narrows a match to
a server port, `gateways` to some of the bound Gateways. The routes are ordered as Envoy orders
server names: exact names first, then wildcards from the longest suffix, so the most specific
name wins; among equals, resource and rule order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from gossamer.resources.kinds.istio_networking import Gateway, Server, TLSRoute, VirtualService
from gossamer.snapshot.model import SniRoute
from gossamer.snapshot.translate_catalog import Catalog, labels_match
from gossamer.snapshot.translate_gateway import bound_hosts
from gossamer.snapshot.translate_tcp import weighted_destinations

__all__ = ["passthrough_routes", "serves_passthrough"]


def serves_passthrough(server: Server) -> bool:
    """Whether a Gateway server passes TLS through unopened."""
    return server.tls is not None and server.tls.mode == "PASSTHROUGH"


def passthrough_routes(catalog: Catalog, labels: Mapping[str, str]) -> tuple[SniRoute, ...]:
    """The SNI routes of the gateway with these labels, most specific name first."""
    gateways = [g for g in catalog.gateways if labels_match(g.spec.selector, labels)]
    servers = [(g, s) for g in gateways for s in g.spec.servers if serves_passthrough(s)]
    if not servers:
        return ()
    ports = frozenset(server.port.number for _, server in servers)
    keys = frozenset(f"{g.namespace}/{g.name}" for g in gateways)
    routes: list[SniRoute] = []
    for service in _bound_services(catalog, servers):
        for rule in service.spec.tls:
            for host in _sni_hosts(rule, service, ports, keys):
                targets = weighted_destinations(service, rule.route, catalog, min(ports))
                if targets and not any(host in route.hosts for route in routes):
                    routes.append(SniRoute(hosts=(host,), clusters=targets))
    return tuple(sorted(routes, key=lambda route: _specificity(route.hosts[0])))


def _bound_services(
    catalog: Catalog, servers: list[tuple[Gateway, Server]]
) -> Iterator[VirtualService]:
    seen: list[VirtualService] = []
    for _, _, service in bound_hosts(catalog, servers):
        if service not in seen:
            seen.append(service)
            yield service


def _sni_hosts(
    rule: TLSRoute, service: VirtualService, ports: frozenset[int], keys: frozenset[str]
) -> Iterator[str]:
    for match in rule.match:
        if match.port is not None and match.port not in ports:
            continue
        named = {g if "/" in g else f"{service.namespace}/{g}" for g in match.gateways}
        if match.gateways and not named & keys:
            continue
        yield from (host.lower() for host in match.sni_hosts)


def _specificity(host: str) -> tuple[int, int, str]:
    if host == "*":
        return 2, 0, host
    if host.startswith("*."):
        return 1, -len(host), host
    return 0, 0, host
