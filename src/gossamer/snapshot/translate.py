"""Resources and endpoints to the snapshot one sidecar or gateway runs: a pure translation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from gossamer.resources import Resource
from gossamer.resources.kinds.istio_networking import DestinationRule, VirtualService
from gossamer.snapshot.model import (
    Certificate,
    Cluster,
    Endpoint,
    InboundMtls,
    Listener,
    ListenerTls,
    Node,
    Route,
    RouteMatch,
    RouteTable,
    ServiceLabels,
    Snapshot,
    TcpRoute,
    Telemetry,
    VirtualHost,
    WeightedCluster,
)
from gossamer.snapshot.translate_catalog import (
    Caller,
    Catalog,
    MeshPort,
    MeshService,
    build_catalog,
    labels_match,
    pod_labels,
)
from gossamer.snapshot.translate_clusters import (
    EndpointIndex,
    canonical_name,
    canonical_revision,
    cluster_name,
    outbound_clusters,
    placeholder_cluster,
)
from gossamer.snapshot.translate_gateway import gateway_virtual_hosts
from gossamer.snapshot.translate_gateway_api import gateway_api_certificates, mesh_http_routes
from gossamer.snapshot.translate_passthrough import passthrough_routes
from gossamer.snapshot.translate_routes import RouteContext, default_route, virtual_service_routes
from gossamer.snapshot.translate_tcp import inbound_tcp_listeners, vip_tcp_listener
from gossamer.snapshot.translate_telemetry import telemetry_for

__all__ = [
    "EndpointIndex",
    "GatewaySpec",
    "OutboundView",
    "SidecarOwn",
    "SidecarSpec",
    "assemble_sidecar",
    "gateway_snapshot",
    "outbound_view",
    "sidecar_catalog",
    "sidecar_own",
    "sidecar_snapshot",
    "view_label_keys",
    "vip_snapshot",
]

LOCALHOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class SidecarSpec:
    """The workload a sidecar serves, and where the sidecar and its app listen."""

    workload: str
    namespace: str
    service_account: str
    outbound_port: int = 15001
    inbound_port: int = 15006
    # Service (or container) port -> the port the app listens on at 127.0.0.1. When empty, the
    # ports of the Services that select the workload, each to its targetPort.
    app_ports: Mapping[int, int] = field(default_factory=dict)
    address: str = LOCALHOST
    mtls: InboundMtls | None = None
    """How the inbound listener takes mesh mTLS (PeerAuthentication); None: plaintext only."""
    tcp_ports: Mapping[str, int] = field(default_factory=dict)
    """Opaque TCP Service port name -> the sidecar's mesh-facing port for it (the ports of its
    WorkloadEntry); a TCP port without one is not served."""


@dataclass(frozen=True, slots=True)
class GatewaySpec:
    """An ingress gateway: its identity, the labels Gateway selectors match, and its HTTP port."""

    name: str = "ingressgateway"
    namespace: str = "istio-system"
    http_port: int = 8080
    address: str = "0.0.0.0"
    labels: Mapping[str, str] = field(default_factory=lambda: {"istio": "ingressgateway"})
    https_port: int = 0
    """Where Ingress `tls` hosts are served over TLS; 0: not at all."""
    passthrough_port: int = 0
    """Where TLS for Gateway servers in PASSTHROUGH mode is routed by SNI; 0: not at all."""
    secrets_dir: str = ""
    """An Ingress's `secretName: NAME` is read from SECRETS_DIR/NAME/tls.crt and tls.key."""
    # Istio's ingress gateway identity, which AuthorizationPolicies name as a principal.
    service_account: str = "istio-ingressgateway-service-account"


@dataclass(frozen=True, slots=True)
class OutboundView:
    """What every sidecar with the same view of the mesh shares: outbound routes and clusters."""

    virtual_hosts: tuple[VirtualHost, ...]
    clusters: tuple[Cluster, ...]


@dataclass(frozen=True, slots=True)
class SidecarOwn:
    """What is particular to one workload's sidecar: who it is, where it listens, its inbound."""

    node: Node
    listeners: tuple[Listener, ...]
    inbound: RouteTable
    clusters: tuple[Cluster, ...]


def view_label_keys(resources: Sequence[Resource]) -> frozenset[str]:
    """The pod label keys that can change what a sidecar sees outbound.

    Only VirtualService `sourceLabels` and DestinationRule `workloadSelector` read the caller's
    labels, so sidecars in one namespace whose labels agree on these keys share one view.
    """
    keys: set[str] = set()
    for resource in resources:
        if isinstance(resource, VirtualService):
            for rule in resource.spec.http:
                for match in rule.match:
                    keys.update(match.source_labels or ())
        elif isinstance(resource, DestinationRule) and resource.spec.workload_selector:
            keys.update(resource.spec.workload_selector.match_labels)
    return frozenset(keys)


def sidecar_catalog(
    resources: Sequence[Resource], namespace: str, labels: Mapping[str, str]
) -> Catalog:
    """The resources as a sidecar in `namespace` with these pod labels sees them."""
    return build_catalog(resources, Caller(namespace, dict(labels)))


def outbound_view(catalog: Catalog, endpoints: EndpointIndex) -> OutboundView:
    """The outbound routes and clusters of every sidecar that sees the mesh as `catalog` does."""
    hosts = _outbound_hosts(catalog)
    table = RouteTable(name="outbound", virtual_hosts=hosts)
    return OutboundView(hosts, _complete(list(outbound_clusters(catalog, endpoints)), (table,)))


def sidecar_own(catalog: Catalog, sidecar: SidecarSpec, labels: Mapping[str, str]) -> SidecarOwn:
    """The node, listeners and inbound side of one workload's sidecar."""
    app_ports = dict(sidecar.app_ports) or _derived_app_ports(catalog, sidecar.workload, labels)
    node = Node(
        workload=sidecar.workload,
        namespace=sidecar.namespace,
        service_account=sidecar.service_account,
        service=canonical_name(labels, sidecar.workload),
        version=canonical_revision(labels),
    )
    tcp = inbound_tcp_listeners(
        _selecting(catalog, labels), sidecar.address, sidecar.tcp_ports, sidecar.mtls
    )
    # The TCP ports' app ports, where the HTTP ones do not already name them.
    served = {**_derived_app_ports(catalog, sidecar.workload, labels, opaque=True), **app_ports}
    return SidecarOwn(
        node=node,
        listeners=(
            Listener("outbound", LOCALHOST, sidecar.outbound_port, "outbound", "outbound"),
            Listener(
                "inbound",
                sidecar.address,
                sidecar.inbound_port,
                "inbound",
                "inbound",
                mtls=sidecar.mtls,
            ),
            *tcp,
        ),
        inbound=RouteTable(name="inbound", virtual_hosts=_inbound_hosts(app_ports)),
        clusters=tuple(_inbound_clusters(catalog, node, served if tcp else app_ports, labels)),
    )


def sidecar_snapshot(
    resources: Sequence[Resource], endpoints: EndpointIndex, sidecar: SidecarSpec, version: str
) -> Snapshot:
    """What the sidecar of one workload runs: an outbound and an inbound listener, and clusters."""
    labels = pod_labels(resources, sidecar.workload, sidecar.namespace)
    catalog = sidecar_catalog(resources, sidecar.namespace, labels)
    return assemble_sidecar(
        outbound_view(catalog, endpoints),
        sidecar_own(catalog, sidecar, labels),
        version,
        telemetry_for(resources, sidecar.namespace, labels),
    )


def assemble_sidecar(
    view: OutboundView, own: SidecarOwn, version: str, telemetry: Telemetry | None = None
) -> Snapshot:
    """One sidecar's snapshot from its shared view and its own part."""
    return Snapshot(
        version=version,
        node=own.node,
        listeners=own.listeners,
        route_tables=(RouteTable(name="outbound", virtual_hosts=view.virtual_hosts), own.inbound),
        clusters=tuple(sorted((*view.clusters, *own.clusters), key=lambda cluster: cluster.name)),
        telemetry=telemetry or Telemetry(),
    )


def gateway_snapshot(
    resources: Sequence[Resource], endpoints: EndpointIndex, gateway: GatewaySpec, version: str
) -> Snapshot:
    """What an ingress gateway runs: Ingress and Gateway-bound routes on one HTTP listener."""
    catalog = build_catalog(resources, Caller(gateway.namespace, dict(gateway.labels)))
    table = RouteTable(
        name="gateway",
        virtual_hosts=gateway_virtual_hosts(catalog, gateway.labels, gateway.http_port),
    )
    listeners = [Listener("gateway", gateway.address, gateway.http_port, "gateway", "gateway")]
    certificates = ingress_certificates(catalog, gateway.secrets_dir) + gateway_api_certificates(
        catalog.gateway_api, gateway.secrets_dir
    )
    if gateway.https_port and certificates:
        tls = ListenerTls(certificates=certificates)
        listeners.append(
            Listener(
                "gateway-tls", gateway.address, gateway.https_port, "gateway", "gateway", tls=tls
            )
        )
    sni = passthrough_routes(catalog, gateway.labels) if gateway.passthrough_port else ()
    if sni:
        route = TcpRoute(clusters=(), sni=sni)
        listeners.append(
            Listener(
                "gateway-passthrough",
                gateway.address,
                gateway.passthrough_port,
                "gateway",
                "",
                tcp=route,
            )
        )
    return Snapshot(
        version=version,
        node=Node(
            workload=gateway.name,
            namespace=gateway.namespace,
            service_account=gateway.service_account,
            service=canonical_name(gateway.labels, gateway.name),
            version=canonical_revision(gateway.labels),
        ),
        listeners=tuple(listeners),
        route_tables=(table,),
        clusters=_complete(list(outbound_clusters(catalog, endpoints)), (table,), listeners),
        telemetry=telemetry_for(resources, gateway.namespace, gateway.labels),
    )


def vip_snapshot(
    resources: Sequence[Resource],
    endpoints: EndpointIndex,
    vips: Mapping[tuple[str, str], str],
    node: Node,
    version: str,
) -> Snapshot:
    """The proxy behind the services' virtual IPs: a listener on each VIP and HTTP or opaque
    TCP port.

    The address a client dialled names the service, as iptables interception would: each
    listener routes every request with that service's routes, whatever its Host header says.
    """
    catalog = build_catalog(resources, Caller(node.namespace, {}))
    listeners: list[Listener] = []
    tables: list[RouteTable] = []
    for service in catalog.services:
        vip = vips.get((service.namespace, service.name))
        if vip is None:
            continue
        for port in service.http_ports:
            name = f"vip|{service.host}:{port.number}"
            host = VirtualHost(
                name=name, domains=("*",), routes=_mesh_routes(catalog, service, port)
            )
            tables.append(RouteTable(name=name, virtual_hosts=(host,)))
            listeners.append(Listener(name, vip, port.number, "outbound", name))
        listeners.extend(
            vip_tcp_listener(catalog, service, port, vip) for port in service.tcp_ports
        )
    return Snapshot(
        version=version,
        node=node,
        listeners=tuple(listeners),
        route_tables=tuple(tables),
        clusters=_complete(list(outbound_clusters(catalog, endpoints)), tables, listeners),
        telemetry=telemetry_for(resources, node.namespace, {}),
    )


def ingress_certificates(catalog: Catalog, secrets_dir: str) -> tuple[Certificate, ...]:
    """The certificates Ingress `tls` entries name, once each, in manifest order."""
    found: dict[tuple[str, tuple[str, ...]], Certificate] = {}
    for ingress in catalog.ingresses:
        for entry in ingress.spec.tls:
            if not entry.secret_name:
                continue
            folder = (
                f"{secrets_dir.rstrip('/')}/{entry.secret_name}"
                if secrets_dir
                else entry.secret_name
            )
            hosts = tuple(entry.hosts)
            found.setdefault(
                (entry.secret_name, hosts),
                Certificate(
                    cert_file=f"{folder}/tls.crt", key_file=f"{folder}/tls.key", hosts=hosts
                ),
            )
    return tuple(found.values())


def _outbound_hosts(catalog: Catalog) -> tuple[VirtualHost, ...]:
    """A virtual host per HTTP port of every service, under the names the caller may use."""
    hosts = []
    for service in catalog.services:
        ports = service.http_ports
        names = _dns_names(service, catalog.caller.namespace)
        # A Host header without a port names port 80, or else the service's first port.
        bare = next((p for p in ports if p.number == 80), ports[0] if ports else None)
        for port in ports:
            suffixes = ("", f":{port.number}") if port is bare else (f":{port.number}",)
            hosts.append(
                VirtualHost(
                    name=f"{service.host}:{port.number}",
                    domains=tuple(name + suffix for name in names for suffix in suffixes),
                    routes=_mesh_routes(catalog, service, port),
                )
            )
    return tuple(hosts)


def _dns_names(service: MeshService, namespace: str) -> list[str]:
    """The names Kubernetes DNS search resolves to a service from a pod in `namespace`."""
    if service.name == service.host:
        # A ServiceEntry host: it is known by that name only.
        return [service.host]
    short = f"{service.name}.{service.namespace}"
    names = [short, f"{short}.svc", service.host]
    return [service.name, *names] if service.namespace == namespace else names


def _mesh_routes(catalog: Catalog, service: MeshService, port: MeshPort) -> tuple[Route, ...]:
    context = RouteContext(
        catalog=catalog,
        gateways=frozenset({"mesh"}),
        ports=frozenset({port.number}),
        port=port.number,
    )
    attached = mesh_http_routes(
        catalog.gateway_api, service.namespace, service.name, port.number, catalog.caller.namespace
    )
    if attached is not None:
        # A Service that HTTPRoutes attach to is routed by them alone (GAMMA).
        return attached
    routes = virtual_service_routes(catalog.mesh_virtual_services(service.host), context)
    return routes or (default_route(cluster_name(port.number, "", service.host)),)


def _derived_app_ports(
    catalog: Catalog, workload: str, labels: Mapping[str, str], *, opaque: bool = False
) -> dict[int, int]:
    """Each HTTP (or, `opaque`, TCP) port of the Services selecting the workload, to the
    container port it targets."""
    named = {
        port.name: port.container_port
        for deployment in catalog.deployments
        if deployment.name == workload and deployment.namespace == catalog.caller.namespace
        for container in deployment.template.spec.containers
        for port in container.ports
        if port.name
    }
    ports: dict[int, int] = {}
    for service in _selecting(catalog, labels):
        for port in service.tcp_ports if opaque else service.http_ports:
            target = named.get(port.target) if isinstance(port.target, str) else port.target
            if target is not None:
                ports.setdefault(port.number, target)
    return ports


def _selecting(catalog: Catalog, labels: Mapping[str, str]) -> list[MeshService]:
    """The Kubernetes Services of the caller's namespace whose selector picks these pod labels."""
    return [
        service
        for service in catalog.services
        if service.namespace == catalog.caller.namespace
        and service.selector
        and not service.entries
        and labels_match(service.selector, labels)
    ]


def _inbound_hosts(app_ports: Mapping[int, int]) -> tuple[VirtualHost, ...]:
    if not app_ports:
        return ()
    several = len(app_ports) > 1
    routes = tuple(_inbound_route(port, several) for port in sorted(app_ports))
    return (VirtualHost(name="inbound", domains=("*",), routes=routes),)


def _inbound_route(port: int, several: bool) -> Route:
    route = Route(
        name=f"inbound|{port}", clusters=(WeightedCluster(cluster=_inbound_cluster_name(port)),)
    )
    # With one app port every request is for it; with several, the port tells them apart.
    return msgspec.structs.replace(route, match=RouteMatch(port=port)) if several else route


def _inbound_clusters(
    catalog: Catalog, node: Node, app_ports: Mapping[int, int], pod: Mapping[str, str]
) -> list[Cluster]:
    services = _selecting(catalog, pod)
    clusters = []
    for port, app_port in sorted(app_ports.items()):
        owner = next((s for s in services if any(p.number == port for p in s.ports)), None)
        labels = ServiceLabels(
            service=owner.host if owner else node.service,
            service_name=owner.name if owner else node.service,
            namespace=node.namespace,
            workload=node.workload,
            version=node.version,
        )
        clusters.append(
            Cluster(
                name=_inbound_cluster_name(port),
                endpoints=(Endpoint(address=LOCALHOST, port=app_port),),
                labels=labels,
            )
        )
    return clusters


def _inbound_cluster_name(port: int) -> str:
    return f"inbound|{port}||"


def _complete(
    clusters: list[Cluster], tables: Iterable[RouteTable], listeners: Iterable[Listener] = ()
) -> tuple[Cluster, ...]:
    """The clusters by name, plus a placeholder for each one a route (or a TCP listener)
    names but nothing defines."""
    known = {cluster.name for cluster in clusters}
    named = {
        target.cluster
        for listener in listeners
        if listener.tcp is not None
        for targets in (listener.tcp.clusters, *(sni.clusters for sni in listener.tcp.sni))
        for target in targets
    } | {
        target
        for table in tables
        for host in table.virtual_hosts
        for route in host.routes
        for target in (
            *(c.cluster for c in route.clusters),
            *(m.cluster for m in route.mirrors),
        )
    }
    clusters.extend(placeholder_cluster(name) for name in sorted(named - known))
    return tuple(sorted(clusters, key=lambda cluster: cluster.name))
