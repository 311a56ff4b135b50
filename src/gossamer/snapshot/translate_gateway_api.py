"""Gateway API on the mesh: HTTPRoutes on the ingress gateway's hosts, and on Services (GAMMA)."""

from __future__ import annotations

from collections.abc import Iterator

from gossamer.resources.gateway_api_binding import GatewayApiIndex, ListenerBinding
from gossamer.resources.hosts import host_matches
from gossamer.resources.kinds.gateway_api import GROUP, Gateway, Listener
from gossamer.resources.kinds.gateway_api_routes import HTTPRoute
from gossamer.snapshot.model import Certificate, Route
from gossamer.snapshot.translate_httproute import RankedRoute, http_route_routes


def gateway_api_hosts(index: GatewayApiIndex) -> Iterator[tuple[str, tuple[Route, ...]]]:
    """Each hostname the served Gateways' listeners take routes for, with its routes.

    A host's own routes come first, in the spec's precedence; then those of each wildcard host
    that covers it, the most specific first, as the spec gives precedence to the route whose
    hostname matches the most characters.
    """
    ranked: dict[str, dict[str, RankedRoute]] = {}
    for route in index.routes:
        hosts = _served_hosts(index, route)
        if not hosts:
            continue
        routes = list(http_route_routes(route, index))
        for host in hosts:
            by_name = ranked.setdefault(host, {})
            for item in routes:
                by_name.setdefault(item.route.name, item)
    for host in sorted(ranked):
        own = sorted(ranked[host].values(), key=lambda item: item.rank)
        covering = sorted(
            (other for other in ranked if other != host and host_matches(other, host)),
            key=lambda other: (other == "*", -len(other)),
        )
        chosen = {item.route.name: item.route for item in own}
        for other in covering:
            for item in sorted(ranked[other].values(), key=lambda item: item.rank):
                chosen.setdefault(item.route.name, item.route)
        yield host, tuple(chosen.values())


def mesh_http_routes(
    index: GatewayApiIndex, namespace: str, name: str, port: int, caller: str
) -> tuple[Route, ...] | None:
    """The routes of calls to one port of a Service when HTTPRoutes attach to it, else None.

    Routes in the caller's namespace (consumer routes) replace those in the Service's
    (producer routes) for that caller. A request no rule matches gets 404, as GAMMA says.
    """
    producer: list[HTTPRoute] = []
    consumer: list[HTTPRoute] = []
    for wanted, route in index.service_routes.get((namespace, name), ()):
        if wanted not in (None, port):
            continue
        if route.namespace == namespace:
            producer.append(route)
        elif route.namespace == caller:
            consumer.append(route)
    chosen = consumer or producer
    if not chosen:
        return None
    ranked = sorted(
        (item for route in chosen for item in http_route_routes(route, index)),
        key=lambda item: item.rank,
    )
    return tuple(item.route for item in ranked)


def gateway_api_certificates(index: GatewayApiIndex, secrets_dir: str) -> tuple[Certificate, ...]:
    """The certificates of the served Gateways' HTTPS listeners, for their hostnames."""
    found: dict[tuple[str, tuple[str, ...]], Certificate] = {}
    for gateway in index.served_gateways():
        for listener in gateway.spec.listeners:
            if listener.protocol != "HTTPS" or not _certificates_permitted(
                index, gateway, listener
            ):
                continue
            hosts = (listener.hostname,) if listener.hostname else ()
            for ref in listener.tls.certificate_refs if listener.tls else []:
                folder = f"{secrets_dir.rstrip('/')}/{ref.name}" if secrets_dir else ref.name
                found.setdefault(
                    (ref.name, hosts),
                    Certificate(
                        cert_file=f"{folder}/tls.crt", key_file=f"{folder}/tls.key", hosts=hosts
                    ),
                )
    return tuple(found.values())


def wants_tls(index: GatewayApiIndex) -> bool:
    """Whether a served Gateway has an HTTPS listener the gateway can serve."""
    return bool(gateway_api_certificates(index, ""))


def _served_hosts(index: GatewayApiIndex, route: HTTPRoute) -> set[str]:
    hosts: set[str] = set()
    for parent in index.parents(route):
        for binding in parent.listeners:
            if _listener_served(index, binding):
                hosts.update(binding.hostnames)
    return hosts


def _listener_served(index: GatewayApiIndex, binding: ListenerBinding) -> bool:
    if not index.served(binding.gateway):
        return False
    listener = binding.listener
    return listener.protocol == "HTTP" or _certificates_permitted(index, binding.gateway, listener)


def _certificates_permitted(index: GatewayApiIndex, gateway: Gateway, listener: Listener) -> bool:
    """An HTTPS listener is served when each certificate it names may be read: a Secret of its
    own namespace, or of one whose ReferenceGrant lets its Gateways read it."""
    tls = listener.tls
    if tls is None or not tls.certificate_refs:
        return False
    source = (GROUP, "Gateway", gateway.namespace)
    return all(
        (ref.namespace or gateway.namespace) == gateway.namespace
        or index.granted(source, ref.namespace or "", ("", "Secret", ref.name))
        for ref in tls.certificate_refs
    )
