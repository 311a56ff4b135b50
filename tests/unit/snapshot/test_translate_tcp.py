"""Opaque TCP ports in the translation: VIP listeners, a sidecar's inbound listener per port,
clusters, endpoints from WorkloadEntry ports, and VirtualService `tcp` routes."""

from __future__ import annotations

from gossamer.resources import Resource, load_text
from gossamer.snapshot import Endpoint, InboundMtls, Listener, Node, Snapshot, WeightedCluster
from gossamer.snapshot.codec import check
from gossamer.snapshot.endpoints import endpoint_index
from gossamer.snapshot.translate import SidecarSpec, sidecar_snapshot, vip_snapshot
from gossamer.snapshot.translate_catalog import opaque_port_names

REDIS = "redis.data.svc.cluster.local"
VIP = "127.77.0.9"

MANIFESTS = """\
apiVersion: v1
kind: Service
metadata: {name: redis, namespace: data}
spec:
  selector: {app: redis}
  ports:
  - {name: tcp-redis, port: 6379, targetPort: 6380}
  - {name: metrics, port: 9121, appProtocol: http}
  - {name: sentinel, port: 26379, appProtocol: redis}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: redis, namespace: data}
spec:
  selector: {matchLabels: {app: redis}}
  template:
    metadata: {labels: {app: redis, version: v1}}
    spec: {containers: [{name: redis, command: [redis-server]}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: redis-0
  namespace: data
  annotations: {gossamer.dev/inbound-port: "15006"}
spec:
  address: 127.0.0.5
  labels: {app: redis, version: v1}
  ports: {tcp-redis: 16379, sentinel: 16380}
"""


def resources(*texts: str) -> list[Resource]:
    result = load_text("---\n".join((MANIFESTS, *texts)), "test.yaml")
    assert [p for p in result.problems if p.severity.name == "ERROR"] == []
    return [loaded.resource for loaded in result.resources]


def vip_of(*texts: str) -> Snapshot:
    loaded = resources(*texts)
    snapshot = vip_snapshot(
        loaded, endpoint_index(loaded), {("data", "redis"): VIP}, Node(workload="vip"), "1"
    )
    check(snapshot)
    return snapshot


def tcp_listener(snapshot: Snapshot, name: str) -> Listener:
    found = {listener.name: listener for listener in snapshot.listeners}
    listener = found[name]
    assert listener.tcp is not None
    return listener


def test_each_opaque_port_gets_a_vip_listener_to_its_cluster() -> None:
    snapshot = vip_of()
    names = sorted(listener.name for listener in snapshot.listeners)
    # HTTP ports keep their route tables; TCP ports by name prefix and by appProtocol are
    # carried as bytes; UDP is not carried at all.
    assert names == [
        f"vip|{REDIS}:9121",
        f"vip|tcp|{REDIS}:26379",
        f"vip|tcp|{REDIS}:6379",
    ]
    redis = tcp_listener(snapshot, f"vip|tcp|{REDIS}:6379")
    assert (redis.address, redis.port, redis.role, redis.route_table) == (VIP, 6379, "outbound", "")
    assert redis.tcp is not None
    assert redis.tcp.clusters == (WeightedCluster(f"outbound|6379||{REDIS}"),)
    clusters = {cluster.name: cluster for cluster in snapshot.clusters}
    # The endpoint is the port the sidecar took for `tcp-redis` (the WorkloadEntry's ports).
    assert [(e.address, e.port) for e in clusters[f"outbound|6379||{REDIS}"].endpoints] == [
        ("127.0.0.5", 16379)
    ]
    assert [e.port for e in clusters[f"outbound|26379||{REDIS}"].endpoints] == [16380]
    assert f"outbound|53||{REDIS}" not in clusters


def test_the_sidecar_serves_each_tcp_port_on_its_own_mesh_port() -> None:
    spec = SidecarSpec(
        workload="redis",
        namespace="data",
        service_account="redis",
        address="127.0.0.5",
        mtls=InboundMtls(mode="STRICT"),
        tcp_ports={"tcp-redis": 16379},
    )
    snapshot = sidecar_snapshot(resources(), {}, spec, "1")
    check(snapshot)
    listener = tcp_listener(snapshot, "inbound|tcp|6379")
    assert (listener.address, listener.port, listener.role) == ("127.0.0.5", 16379, "inbound")
    assert listener.mtls == InboundMtls(mode="STRICT")
    assert listener.tcp is not None
    # Policies see the workload's port, the targetPort, as Istio's do.
    assert listener.tcp.destination_port == 6380
    assert listener.tcp.clusters == (WeightedCluster("inbound|6379||"),)
    clusters = {cluster.name: cluster for cluster in snapshot.clusters}
    assert clusters["inbound|6379||"].endpoints == (Endpoint("127.0.0.1", 6380),)
    # A TCP port the sidecar took no port for is not served.
    assert "inbound|tcp|26379" not in {x.name for x in snapshot.listeners}


def test_a_workload_knows_which_of_its_ports_are_opaque() -> None:
    assert opaque_port_names(resources(), "data", {"app": "redis"}) == ("sentinel", "tcp-redis")
    assert opaque_port_names(resources(), "default", {"app": "redis"}) == ()


ROUTES = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: redis, namespace: data}
spec:
  host: redis
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: redis, namespace: data}
spec:
  hosts: [redis]
  tcp:
  - match: [{port: 26379}]
    route: [{destination: {host: redis, subset: v2}}]
  - match: [{port: 6379}]
    route:
    - {destination: {host: redis, subset: v1}, weight: 80}
    - {destination: {host: redis, subset: v2}, weight: 20}
    - {destination: {host: redis, subset: v3}, weight: 0}
"""


def test_tcp_routes_pick_weighted_subsets_by_port() -> None:
    snapshot = vip_of(ROUTES)
    redis = tcp_listener(snapshot, f"vip|tcp|{REDIS}:6379").tcp
    assert redis is not None
    assert redis.clusters == (
        WeightedCluster(f"outbound|6379|v1|{REDIS}", 80),
        WeightedCluster(f"outbound|6379|v2|{REDIS}", 20),
    )
    sentinel = tcp_listener(snapshot, f"vip|tcp|{REDIS}:26379").tcp
    assert sentinel is not None
    assert sentinel.clusters == (WeightedCluster(f"outbound|26379|v2|{REDIS}"),)
    clusters = {cluster.name: cluster for cluster in snapshot.clusters}
    assert [e.port for e in clusters[f"outbound|6379|v1|{REDIS}"].endpoints] == [16379]
    assert clusters[f"outbound|6379|v2|{REDIS}"].endpoints == ()


def test_a_tcp_route_to_an_unknown_host_gets_a_placeholder_cluster() -> None:
    snapshot = vip_of("""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: redis, namespace: data}
spec:
  hosts: [redis]
  tcp:
  - route: [{destination: {host: cache.elsewhere, port: {number: 7000}}}]
""")
    redis = tcp_listener(snapshot, f"vip|tcp|{REDIS}:6379").tcp
    assert redis is not None
    assert redis.clusters == (WeightedCluster("outbound|7000||cache.elsewhere"),)
    assert "outbound|7000||cache.elsewhere" in {cluster.name for cluster in snapshot.clusters}
