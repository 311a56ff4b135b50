"""Opaque TCP ports to listeners: one on each Service VIP and TCP port, and one per TCP port in
front of a workload, with VirtualService `tcp` routes choosing the clusters.

A VirtualService `tcp` rule applies to a connection when one of its matches does (none: every
connection): `port` the Service port, `gateways` including `mesh` when set, `sourceLabels` and
`sourceNamespace` the caller's. A match with `destinationSubnets` is not supported and never
matches. The first rule that applies sends each connection to one of its destinations, by
weight; with none, the connection goes to the Service's own cluster for that port.
"""

from __future__ import annotations

from collections.abc import Mapping

from gossamer.resources.kinds.istio_networking import (
    L4MatchAttributes,
    RouteDestination,
    TCPRoute,
    VirtualService,
)
from gossamer.snapshot.model import InboundMtls, Listener, TcpRoute, WeightedCluster
from gossamer.snapshot.translate_catalog import Catalog, MeshPort, MeshService, labels_match
from gossamer.snapshot.translate_clusters import cluster_name

__all__ = ["inbound_tcp_listeners", "tcp_targets", "vip_tcp_listener", "weighted_destinations"]


def vip_tcp_listener(catalog: Catalog, service: MeshService, port: MeshPort, vip: str) -> Listener:
    """The listener on a Service's VIP and opaque port."""
    return Listener(
        f"vip|tcp|{service.host}:{port.number}",
        vip,
        port.number,
        "outbound",
        "",
        tcp=TcpRoute(clusters=tcp_targets(catalog, service, port)),
    )


def inbound_tcp_listeners(
    services: list[MeshService],
    address: str,
    mesh_ports: Mapping[str, int],
    mtls: InboundMtls | None,
) -> list[Listener]:
    """A sidecar's listener per opaque port of the Services selecting its workload, on the
    mesh-facing port allocated for the port's name, to the `inbound|PORT||` cluster."""
    listeners: dict[int, Listener] = {}
    for service in services:
        for port in service.tcp_ports:
            mesh_port = mesh_ports.get(port.name)
            if mesh_port is None or mesh_port in listeners:
                continue
            listeners[mesh_port] = Listener(
                f"inbound|tcp|{port.number}",
                address,
                mesh_port,
                "inbound",
                "",
                mtls=mtls,
                tcp=TcpRoute(
                    clusters=(WeightedCluster(cluster=f"inbound|{port.number}||"),),
                    destination_port=port.target_number,
                ),
            )
    return [listeners[number] for number in sorted(listeners)]


def tcp_targets(
    catalog: Catalog, service: MeshService, port: MeshPort
) -> tuple[WeightedCluster, ...]:
    """The clusters a connection to the service's port goes to, with their weights."""
    for virtual_service in catalog.mesh_virtual_services(service.host):
        for rule in virtual_service.spec.tcp:
            if _applies(rule, port.number, catalog):
                targets = weighted_destinations(virtual_service, rule.route, catalog, port.number)
                if targets:
                    return targets
    return (WeightedCluster(cluster=cluster_name(port.number, "", service.host)),)


def _applies(rule: TCPRoute, port: int, catalog: Catalog) -> bool:
    return not rule.match or any(_matches(match, port, catalog) for match in rule.match)


def _matches(match: L4MatchAttributes, port: int, catalog: Catalog) -> bool:
    caller = catalog.caller
    return (
        not match.destination_subnets
        and (match.port is None or match.port == port)
        and (not match.gateways or "mesh" in match.gateways)
        and labels_match(match.source_labels, caller.labels)
        and (match.source_namespace is None or match.source_namespace == caller.namespace)
    )


def weighted_destinations(
    virtual_service: VirtualService,
    route: list[RouteDestination],
    catalog: Catalog,
    port: int,
) -> tuple[WeightedCluster, ...]:
    """A `tcp` or `tls` rule's destinations as weighted clusters (a destination without a port
    takes `port` when its service has it)."""
    # A lone destination takes every connection whatever its weight, as in Istio.
    single = len(route) == 1
    targets = []
    for target in route:
        weight = 100 if single else target.weight or 0
        if weight <= 0:
            continue
        destination = target.destination
        host = catalog.resolve(destination.host, virtual_service.namespace)
        number = destination.port.number if destination.port else None
        if number is None:
            number = _default_port(catalog, host, port)
        targets.append(
            WeightedCluster(
                cluster=cluster_name(number, destination.subset or "", host), weight=weight
            )
        )
    return tuple(targets)


def _default_port(catalog: Catalog, host: str, port: int) -> int:
    """A destination without a port: the routed one if its service has it, else its first."""
    service = catalog.by_host.get(host)
    numbers = [p.number for p in service.tcp_ports] if service is not None else []
    return port if port in numbers or not numbers else numbers[0]
