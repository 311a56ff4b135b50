"""The ingress gateway's routes: Kubernetes Ingress paths, and VirtualServices bound to Gateways."""

from pathlib import Path

from gossamer.resources import Resource, load_text
from gossamer.snapshot import (
    Listener,
    Redirect,
    Route,
    RouteMatch,
    Snapshot,
    StringMatch,
    VirtualHost,
    WeightedCluster,
)
from gossamer.snapshot.codec import check
from gossamer.snapshot.translate import GatewaySpec, gateway_snapshot
from gossamer.snapshot.translate_routes import DEFAULT_RETRY

ASSETS = Path(__file__).resolve().parents[3] / "examples" / "assets"

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}, {name: http-metrics, port: 9100}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports: [{name: http, port: 8080}]
"""


def resources(text: str) -> list[Resource]:
    result = load_text(text, "test.yaml")
    assert [p for p in result.problems if p.severity.name == "ERROR"] == []
    return [loaded.resource for loaded in result.resources]


def gateway(text: str, spec: GatewaySpec | None = None) -> Snapshot:
    snapshot = gateway_snapshot(resources(text), {}, spec or GatewaySpec(), "7")
    check(snapshot)
    return snapshot


def hosts(snapshot: Snapshot) -> dict[str, VirtualHost]:
    (table,) = snapshot.route_tables
    return {host.name: host for host in table.virtual_hosts}


def paths(host: VirtualHost) -> list[tuple[str | None, str | None, str]]:
    return [
        (
            route.match.path.kind if route.match.path else None,
            route.match.path.value if route.match.path else None,
            route.clusters[0].cluster,
        )
        for route in host.routes
    ]


def test_the_assets_ingress_routes_its_paths_longest_first() -> None:
    text = (ASSETS / "services.yaml").read_text() + "---\n" + (ASSETS / "ingress.yaml").read_text()
    snapshot = gateway(text)
    assert snapshot.listeners == (Listener("gateway", "0.0.0.0", 8080, "gateway", "gateway"),)
    served = hosts(snapshot)
    assert sorted(served) == [
        "api.greencompute.local",
        "assets.greencompute.local",
        "assets.localhost",
    ]
    host = served["assets.greencompute.local"]
    assert host.domains == ("assets.greencompute.local", "assets.greencompute.local:8080")
    # The note's Ingress (v1beta1 paths without a pathType are ImplementationSpecific: a plain
    # prefix) and the accounts Ingress on the same host (pathType Prefix: whole segments) make
    # one host, longest prefix first.
    assert paths(host) == [
        (
            "prefix",
            "/assetdashboard",
            "outbound|8080||asset-dashboard-bff-svc.greencompute.svc.cluster.local",
        ),
        (
            "prefix",
            "/assetconsumer",
            "outbound|8080||asset-consumer-svc.greencompute.svc.cluster.local",
        ),
        ("prefix", "/assetmgrms", "outbound|8080||asset-mgr-ms-svc.greencompute.svc.cluster.local"),
        ("path_prefix", "/users", "outbound|8080||users-svc.greencompute.svc.cluster.local"),
        ("path_prefix", "/auth", "outbound|8080||auth-svc.greencompute.svc.cluster.local"),
    ]
    assert host.routes[2].name == "ingress/greencompute/assetmanagement/rules/0/paths/2"
    local = served["assets.localhost"]
    assert [(kind, path) for kind, path, _ in paths(local)] == [
        ("path_prefix", path) for _, path, _ in paths(host)
    ]
    assert all(route.retries is not None for route in host.routes)


def test_exact_paths_come_before_prefixes_of_the_same_length_and_a_default_backend_last() -> None:
    snapshot = gateway(
        SERVICES
        + """\
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: shop}
spec:
  defaultBackend:
    service: {name: web, port: {number: 80}}
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 8080}}}}
      - {path: /api, pathType: Exact, backend: {service: {name: web, port: {name: http-metrics}}}}
      - {path: /api/v2, pathType: ImplementationSpecific, backend: {service: {name: api, port: {number: 8080}}}}
      - {path: /missing, pathType: Prefix, backend: {service: {name: web, port: {name: nope}}}}
"""
    )
    web, metrics, api = (
        "outbound|80||web.shop.svc.cluster.local",
        "outbound|9100||web.shop.svc.cluster.local",
        "outbound|8080||api.shop.svc.cluster.local",
    )
    found = hosts(snapshot)
    assert list(found) == ["shop.example.com", "*"]
    assert paths(found["shop.example.com"]) == [
        ("prefix", "/api/v2", api),
        ("exact", "/api", metrics),
        ("path_prefix", "/api", api),
        ("path_prefix", "/", web),
        (None, None, web),
    ]
    assert found["*"].domains == ("*",)
    assert paths(found["*"]) == [(None, None, web)]


def test_virtual_services_bound_to_a_selected_gateway_route_its_hosts() -> None:
    snapshot = gateway(
        SERVICES
        + """\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop-gateway, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["shop.example.com", "*.internal.example.com"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: other-gateway, namespace: shop}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [shop-gateway]
  http:
  - match: [{uri: {prefix: /api}, port: 80}, {uri: {prefix: /tls-only}, port: 443}]
    route: [{destination: {host: api}}]
  - route: [{destination: {host: web, port: {number: 80}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: admin, namespace: ops}
spec:
  hosts: [admin.internal.example.com]
  gateways: [shop/shop-gateway]
  http:
  - route: [{destination: {host: web.shop.svc.cluster.local, port: {number: 9100}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: unbound, namespace: shop}
spec:
  hosts: [shop.example.com]
  gateways: [other-gateway]
  http:
  - route: [{destination: {host: api}}]
"""
    )
    found = hosts(snapshot)
    assert list(found) == [
        "admin.internal.example.com",
        "shop.example.com",
        "*.internal.example.com",
    ]
    assert found["shop.example.com"].routes == (
        Route(
            name="shop/shop/0/0",
            match=RouteMatch(path=StringMatch("prefix", "/api")),
            clusters=(WeightedCluster("outbound|8080||api.shop.svc.cluster.local"),),
            retries=DEFAULT_RETRY,
        ),
        Route(
            name="shop/shop/1",
            clusters=(WeightedCluster("outbound|80||web.shop.svc.cluster.local"),),
            retries=DEFAULT_RETRY,
        ),
    )
    assert [r.clusters[0].cluster for r in found["admin.internal.example.com"].routes] == [
        "outbound|9100||web.shop.svc.cluster.local"
    ]


def test_a_server_host_with_a_namespace_takes_virtual_services_of_that_namespace_only() -> None:
    snapshot = gateway(
        SERVICES
        + """\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["shop/*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: shop}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/edge]
  http:
  - route: [{destination: {host: api}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: intruder, namespace: default}
spec:
  hosts: [evil.example.com]
  gateways: [istio-system/edge]
  http:
  - route: [{destination: {host: api.shop}}]
"""
    )
    assert list(hosts(snapshot)) == ["shop.example.com"]


def test_an_https_redirect_server_answers_every_request_with_a_redirect() -> None:
    snapshot = gateway(
        SERVICES
        + """\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop-gateway, namespace: shop}
spec:
  selector: {app: edge}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["shop.example.com"]
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: shop}
spec:
  hosts: [shop.example.com]
  gateways: [shop-gateway]
  http:
  - route: [{destination: {host: web}}]
""",
        GatewaySpec(name="edge", namespace="shop", http_port=8000, labels={"app": "edge"}),
    )
    (host,) = hosts(snapshot).values()
    assert host.domains == ("shop.example.com", "shop.example.com:8000")
    (route,) = host.routes
    assert route.redirect == Redirect(status=301, scheme="https")
    assert snapshot.node.workload == "edge"
    assert snapshot.node.service == "edge"
