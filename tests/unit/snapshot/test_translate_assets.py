"""The reference application's manifests as the snapshots its sidecars and gateway run."""

import random
from pathlib import Path

from gossamer.resources import Resource, load_paths, load_text
from gossamer.snapshot import (
    Endpoint,
    Listener,
    Node,
    RouteMatch,
    ServiceLabels,
    Snapshot,
    decode,
    dump,
)
from gossamer.snapshot.codec import check
from gossamer.snapshot.translate import (
    EndpointIndex,
    GatewaySpec,
    SidecarSpec,
    gateway_snapshot,
    sidecar_snapshot,
)

ASSETS = Path(__file__).resolve().parents[3] / "examples" / "assets"
MGR = "asset-mgr-ms-svc.greencompute.svc.cluster.local"
ASSET_MGR = SidecarSpec("asset-mgr-ms", "greencompute", "asset-mgr-ms")


def assets() -> list[Resource]:
    result = load_paths([ASSETS])
    assert result.problems == []
    return [loaded.resource for loaded in result.resources]


def replicas() -> EndpointIndex:
    def pod(address: str, version: str) -> Endpoint:
        return Endpoint(address, 8080, labels=(("app", "asset-mgr-ms"), ("version", version)))

    return {
        (MGR, 8080): [pod("127.0.0.12", "v1"), pod("127.0.0.11", "v1"), pod("127.0.0.13", "v2")],
        ("auth-svc.greencompute.svc.cluster.local", 8080): [Endpoint("127.0.0.21", 8080)],
    }


def sidecar() -> Snapshot:
    snapshot = sidecar_snapshot(assets(), replicas(), ASSET_MGR, "42")
    check(snapshot)
    return snapshot


def test_the_asset_manager_sidecar_routes_every_service_and_serves_its_app() -> None:
    snapshot = sidecar()
    assert snapshot.version == "42"
    assert snapshot.node == Node(
        workload="asset-mgr-ms",
        namespace="greencompute",
        service_account="asset-mgr-ms",
        service="asset-mgr-ms",
        version="v1",
    )
    assert snapshot.listeners == (
        Listener("outbound", "127.0.0.1", 15001, "outbound", "outbound"),
        Listener("inbound", "127.0.0.1", 15006, "inbound", "inbound"),
    )
    outbound, inbound = snapshot.route_tables
    assert [host.name for host in outbound.virtual_hosts] == [
        f"{name}.greencompute.svc.cluster.local:8080"
        for name in (
            "asset-consumer-svc",
            "asset-dashboard-bff-svc",
            "asset-mgr-ms-svc",
            "auth-svc",
            "event-broker-svc",
            "risk-svc",
            "users-svc",
        )
    ]
    (canary,) = next(h for h in outbound.virtual_hosts if h.name == f"{MGR}:8080").routes
    assert [(c.cluster, c.weight) for c in canary.clusters] == [
        (f"outbound|8080|v1|{MGR}", 90),
        (f"outbound|8080|v2|{MGR}", 10),
    ]
    assert (canary.timeout, canary.retries and canary.retries.attempts) == (5.0, 3)
    # The app's port comes from its Service's targetPort, named `http` in the Deployment.
    (route,) = inbound.virtual_hosts[0].routes
    assert (route.match, route.clusters[0].cluster) == (RouteMatch(), "inbound|8080||")


def test_the_asset_manager_clusters_carry_the_canary_and_its_metric_labels() -> None:
    clusters = {cluster.name: cluster for cluster in sidecar().clusters}
    v1, v2 = clusters[f"outbound|8080|v1|{MGR}"], clusters[f"outbound|8080|v2|{MGR}"]
    assert [e.address for e in v1.endpoints] == ["127.0.0.11", "127.0.0.12"]
    assert [e.address for e in v2.endpoints] == ["127.0.0.13"]
    assert (v2.labels.workload, v2.labels.version) == ("asset-mgr-ms-v2", "v2")
    assert (v1.lb_policy, v1.limits.max_pending) == ("LEAST_REQUEST", 64)
    assert clusters["inbound|8080||"].endpoints == (Endpoint("127.0.0.1", 8080),)
    assert clusters["inbound|8080||"].labels == ServiceLabels(
        service=MGR,
        service_name="asset-mgr-ms-svc",
        namespace="greencompute",
        workload="asset-mgr-ms",
        version="v1",
    )


def test_explicit_app_ports_tell_inbound_routes_apart_by_port() -> None:
    spec = SidecarSpec(
        "asset-mgr-ms", "greencompute", "asset-mgr-ms", app_ports={9090: 19090, 8080: 18080}
    )
    snapshot = sidecar_snapshot(assets(), {}, spec, "1")
    check(snapshot)
    routes = snapshot.route_tables[1].virtual_hosts[0].routes
    assert [(r.match, r.clusters[0].cluster) for r in routes] == [
        (RouteMatch(port=8080), "inbound|8080||"),
        (RouteMatch(port=9090), "inbound|9090||"),
    ]
    clusters = {cluster.name: cluster for cluster in snapshot.clusters}
    assert clusters["inbound|9090||"].endpoints == (Endpoint("127.0.0.1", 19090),)


def test_the_assets_gateway_serves_the_ingress() -> None:
    snapshot = gateway_snapshot(assets(), replicas(), GatewaySpec(), "42")
    check(snapshot)
    assert snapshot.node.service_account == "istio-ingressgateway-service-account"
    (table,) = snapshot.route_tables
    hosts = {host.name: host for host in table.virtual_hosts}
    assert sorted(hosts) == [
        "api.greencompute.local",
        "assets.greencompute.local",
        "assets.localhost",
    ]
    assert len(hosts["assets.greencompute.local"].routes) == 5


def test_the_same_input_gives_the_same_bytes_whatever_the_endpoint_order() -> None:
    shuffled = {
        key: random.Random(7).sample(list(value), len(value)) for key, value in replicas().items()
    }
    first = dump(sidecar_snapshot(assets(), replicas(), ASSET_MGR, "1"))
    assert dump(sidecar_snapshot(assets(), shuffled, ASSET_MGR, "1")) == first
    assert decode(first) == sidecar_snapshot(assets(), replicas(), ASSET_MGR, "1")
    gateway = dump(gateway_snapshot(assets(), replicas(), GatewaySpec(), "1"))
    assert dump(gateway_snapshot(assets(), shuffled, GatewaySpec(), "1")) == gateway
    # Decoding runs the codec's checks.
    assert decode(gateway) == gateway_snapshot(assets(), replicas(), GatewaySpec(), "1")


def test_a_workload_without_a_deployment_gets_outbound_routes_and_no_inbound_ones() -> None:
    result = load_text((ASSETS / "services.yaml").read_text(), "services.yaml")
    spec = SidecarSpec("batch-job", "greencompute", "batch")
    snapshot = sidecar_snapshot([r.resource for r in result.resources], {}, spec, "1")
    check(snapshot)
    assert snapshot.route_tables[1].virtual_hosts == ()
    assert snapshot.node.service == "batch-job"
    assert len(snapshot.route_tables[0].virtual_hosts) == 6
    assert snapshot.route_tables[0].virtual_hosts[0].domains[0] == "asset-consumer-svc"


def test_every_reference_example_translates_to_a_snapshot_that_passes_its_checks() -> None:
    # The examples of the Kubernetes and Istio reference pages, some of them broken on purpose.
    examples = ASSETS.parents[1] / "tests" / "unit" / "resources" / "reference_examples"
    resources = [loaded.resource for loaded in load_paths([examples, ASSETS]).resources]
    for namespace in ("default", "foo", "prod", "istio-system"):
        check(sidecar_snapshot(resources, {}, SidecarSpec("reviews-v1", namespace, "x"), "1"))
    for labels in ({"istio": "ingressgateway"}, {"app": "my-gateway-controller"}):
        check(gateway_snapshot(resources, {}, GatewaySpec(labels=labels), "1"))
