"""TLS passthrough at the gateway: PASSTHROUGH Gateway servers and the VirtualService `tls`
rules bound to them, as SNI routes of the gateway's passthrough listener."""

from __future__ import annotations

from gossamer.resources import Resource, load_text
from gossamer.snapshot import Snapshot, SniRoute, WeightedCluster
from gossamer.snapshot.codec import check
from gossamer.snapshot.translate import GatewaySpec, gateway_snapshot

SHOP = "shop.default.svc.cluster.local"
API = "api.default.svc.cluster.local"

MANIFESTS = """\
apiVersion: v1
kind: Service
metadata: {name: shop}
spec:
  selector: {app: shop}
  ports: [{name: https, port: 443, targetPort: 8443}]
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports: [{name: tls-api, port: 8443}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    tls: {mode: PASSTHROUGH}
    hosts: ["*.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop.example.com, "*.api.example.com"]
  gateways: [edge]
  tls:
  - match: [{port: 443, sniHosts: [shop.example.com]}]
    route: [{destination: {host: shop}}]
  - match: [{sniHosts: ["*.api.example.com"]}]
    route:
    - {destination: {host: api, port: {number: 8443}}, weight: 90}
    - {destination: {host: shop}, weight: 10}
  - match: [{port: 8443, sniHosts: [other.example.com]}]
    route: [{destination: {host: shop}}]
"""


def resources() -> list[Resource]:
    result = load_text(MANIFESTS, "test.yaml")
    assert [p for p in result.problems if p.severity.name == "ERROR"] == []
    return [loaded.resource for loaded in result.resources]


def gateway(passthrough_port: int) -> Snapshot:
    spec = GatewaySpec(http_port=8080, passthrough_port=passthrough_port)
    snapshot = gateway_snapshot(resources(), {}, spec, "1")
    check(snapshot)
    return snapshot


def test_passthrough_servers_become_sni_routes_on_their_own_listener() -> None:
    snapshot = gateway(9443)
    [listener] = [x for x in snapshot.listeners if x.name == "gateway-passthrough"]
    assert (listener.port, listener.role, listener.tls) == (9443, "gateway", None)
    assert listener.tcp is not None
    assert listener.tcp.clusters == ()
    # The exact name first; the match for another server port is not taken.
    assert listener.tcp.sni == (
        SniRoute(("shop.example.com",), (WeightedCluster(f"outbound|443||{SHOP}"),)),
        SniRoute(
            ("*.api.example.com",),
            (
                WeightedCluster(f"outbound|8443||{API}", 90),
                WeightedCluster(f"outbound|443||{SHOP}", 10),
            ),
        ),
    )
    clusters = {cluster.name for cluster in snapshot.clusters}
    assert {f"outbound|443||{SHOP}", f"outbound|8443||{API}"} <= clusters


def test_no_passthrough_port_no_listener() -> None:
    assert "gateway-passthrough" not in {x.name for x in gateway(0).listeners}
