"""Gateway API translation: HTTPRoutes on the ingress gateway's hosts, and on Services (GAMMA)."""

from __future__ import annotations

from gossamer.resources import Resource, load_text
from gossamer.snapshot import (
    DirectResponse,
    HeaderMatch,
    HeaderOps,
    Mirror,
    QueryMatch,
    Redirect,
    Rewrite,
    Route,
    RouteMatch,
    Snapshot,
    StringMatch,
    VirtualHost,
)
from gossamer.snapshot.codec import check
from gossamer.snapshot.translate import GatewaySpec, SidecarSpec, gateway_snapshot, sidecar_snapshot
from gossamer.snapshot.translate_httproute import INVALID_BACKEND

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: shop, namespace: web}
spec:
  selector: {app: shop}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: shop-v1, namespace: web}
spec:
  selector: {app: shop, version: v1}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: shop-v2, namespace: web}
spec:
  selector: {app: shop, version: v2}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: billing, namespace: pay}
spec:
  selector: {app: billing}
  ports: [{name: http, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: web}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: "*.example.com"}
---
"""
V1 = "outbound|80||shop-v1.web.svc.cluster.local"
V2 = "outbound|80||shop-v2.web.svc.cluster.local"
BILLING = "outbound|8080||billing.pay.svc.cluster.local"


def resources(text: str) -> list[Resource]:
    result = load_text(SERVICES + text, "test.yaml")
    assert [str(p) for p in result.problems if p.severity.name == "ERROR"] == []
    return [loaded.resource for loaded in result.resources]


def gateway(text: str) -> Snapshot:
    snapshot = gateway_snapshot(resources(text), {}, GatewaySpec(), "7")
    check(snapshot)
    return snapshot


def hosts(text: str) -> dict[str, VirtualHost]:
    return {host.name: host for host in gateway(text).route_tables[0].virtual_hosts}


def routes(text: str, host: str = "shop.example.com") -> tuple[Route, ...]:
    return hosts(text)[host].routes


def route(name: str, rules: str, *, hostnames: str = "[shop.example.com]", extra: str = "") -> str:
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: web{extra}}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: {hostnames}
  rules:
{rules}---
"""


def test_a_route_on_a_gateway_serves_its_hostname_with_the_listener_port() -> None:
    served = hosts(route("shop", "  - backendRefs: [{name: shop-v1, port: 80}]\n"))
    host = served["shop.example.com"]
    assert host.domains == ("shop.example.com", "shop.example.com:8080")
    (only,) = host.routes
    assert only.name == "httproute/web/shop/0"
    assert only.match == RouteMatch(path=StringMatch(kind="path_prefix", value="/"))
    assert [(c.cluster, c.weight) for c in only.clusters] == [(V1, 1)]


def test_hostnames_are_intersected_with_the_listeners() -> None:
    text = route(
        "shop",
        "  - backendRefs: [{name: shop-v1, port: 80}]\n",
        hostnames='[shop.example.com, other.org, "*.example.com"]',
    ) + route("any", "  - backendRefs: [{name: shop-v2, port: 80}]\n", hostnames="[]")
    served = hosts(text)
    assert sorted(served) == ["*.example.com", "shop.example.com"]
    # A host's own routes, then those of the wildcard hosts that cover it.
    assert [r.name for r in served["shop.example.com"].routes] == [
        "httproute/web/shop/0",
        "httproute/web/any/0",
    ]


def test_matches_follow_the_spec_precedence_across_routes() -> None:
    older = route(
        "older",
        "  - matches: [{path: {type: PathPrefix, value: /api}}]\n"
        "    backendRefs: [{name: shop-v1, port: 80}]\n",
        extra=", creationTimestamp: '2024-01-01T00:00:00Z'",
    )
    newer = route(
        "newer",
        "  - matches:\n"
        "    - path: {type: PathPrefix, value: /api}\n"
        "    - path: {type: PathPrefix, value: /api/v2}\n"
        "    - path: {type: Exact, value: /api}\n"
        "    - path: {type: PathPrefix, value: /api}\n"
        "      method: POST\n"
        "    - path: {type: PathPrefix, value: /api}\n"
        "      headers: [{name: X-A, value: a}, {name: X-B, value: b}]\n"
        "    - path: {type: PathPrefix, value: /api}\n"
        "      headers: [{name: X-A, value: a}]\n"
        "      queryParams: [{name: q, value: '1'}]\n"
        "    - path: {type: PathPrefix, value: /api}\n"
        "      headers: [{name: X-A, value: a}]\n"
        "    - path: {type: RegularExpression, value: '/api/.*'}\n"
        "    backendRefs: [{name: shop-v2, port: 80}]\n",
        extra=", creationTimestamp: '2025-01-01T00:00:00Z'",
    )
    found = [(r.name, r.match) for r in routes(newer + older)]
    names = [name for name, _ in found]
    assert names == [
        "httproute/web/newer/0/2",  # Exact
        "httproute/web/newer/0/7",  # a regular expression, after exact paths
        "httproute/web/newer/0/1",  # the longest prefix
        "httproute/web/newer/0/3",  # a method
        "httproute/web/newer/0/4",  # two headers
        "httproute/web/newer/0/5",  # one header and a query parameter
        "httproute/web/newer/0/6",  # one header
        "httproute/web/older/0",  # a tie: the oldest route first
        "httproute/web/newer/0/0",
    ]
    assert found[4][1].headers == (
        HeaderMatch("x-a", StringMatch(kind="exact", value="a")),
        HeaderMatch("x-b", StringMatch(kind="exact", value="b")),
    )
    assert found[5][1].query == (QueryMatch("q", StringMatch(kind="exact", value="1")),)


def test_without_timestamps_routes_tie_by_namespace_and_name() -> None:
    rule = "  - backendRefs: [{name: shop-v1, port: 80}]\n"
    names = [r.name for r in routes(route("zeta", rule) + route("alpha", rule))]
    assert names == ["httproute/web/alpha/0", "httproute/web/zeta/0"]


def test_filters_become_route_features() -> None:
    text = route(
        "shop",
        "  - matches: [{path: {type: PathPrefix, value: /store}}]\n"
        "    filters:\n"
        "    - type: RequestHeaderModifier\n"
        "      requestHeaderModifier:\n"
        "        set: [{name: X-Route, value: shop}]\n"
        "        add: [{name: X-Trace, value: 'on'}]\n"
        "        remove: [X-Internal]\n"
        "    - type: ResponseHeaderModifier\n"
        "      responseHeaderModifier: {set: [{name: Cache-Control, value: no-store}]}\n"
        "    - type: URLRewrite\n"
        "      urlRewrite:\n"
        "        hostname: shop.internal\n"
        "        path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}\n"
        "    - type: RequestMirror\n"
        "      requestMirror:\n"
        "        backendRef: {name: shop-v2, port: 80}\n"
        "        fraction: {numerator: 1, denominator: 4}\n"
        "    backendRefs:\n"
        "    - name: shop-v1\n"
        "      port: 80\n"
        "      filters:\n"
        "      - type: RequestHeaderModifier\n"
        "        requestHeaderModifier: {set: [{name: X-Backend, value: v1}]}\n"
        "    timeouts: {request: 10s, backendRequest: 2s}\n"
        "  - matches: [{path: {type: Exact, value: /about}}]\n"
        "    filters:\n"
        "    - type: URLRewrite\n"
        "      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /pages/about}}\n"
        "    backendRefs: [{name: shop-v1, port: 80}]\n"
        "  - matches: [{path: {type: PathPrefix, value: /old}}]\n"
        "    filters:\n"
        "    - type: RequestRedirect\n"
        "      requestRedirect:\n"
        "        scheme: https\n"
        "        hostname: shop.example.com\n"
        "        path: {type: ReplaceFullPath, replaceFullPath: /new}\n",
    )
    by_name = {r.name: r for r in routes(text)}
    store = by_name["httproute/web/shop/0"]
    assert store.request_headers == HeaderOps(
        set=(("x-route", "shop"),), add=(("x-trace", "on"),), remove=("x-internal",)
    )
    assert store.response_headers == HeaderOps(set=(("cache-control", "no-store"),))
    assert store.rewrite == Rewrite(prefix="/v2", authority="shop.internal")
    assert store.mirrors == (Mirror(V2, 25.0),)
    assert store.clusters[0].request_headers == HeaderOps(set=(("x-backend", "v1"),))
    assert store.timeout == 10.0
    assert store.retries is not None and store.retries.per_try_timeout == 2.0
    about = by_name["httproute/web/shop/1"]
    assert about.rewrite == Rewrite(regex="^.*$", substitution="/pages/about")
    moved = by_name["httproute/web/shop/2"]
    assert moved.redirect == Redirect(
        status=302, path="/new", authority="shop.example.com", scheme="https", port=443
    )
    assert moved.clusters == ()


def test_weights_split_traffic_and_zero_sends_none() -> None:
    text = route(
        "shop",
        "  - backendRefs:\n"
        "    - {name: shop-v1, port: 80, weight: 90}\n"
        "    - {name: shop-v2, port: 80, weight: 10}\n"
        "    - {name: shop, port: 80, weight: 0}\n",
    )
    (only,) = routes(text)
    assert [(c.cluster, c.weight) for c in only.clusters] == [(V1, 90), (V2, 10)]


CROSS = "  - backendRefs:\n    - {name: shop-v1, port: 80}\n    - {name: billing, namespace: pay, port: 8080}\n"
GRANT = """\
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: web-routes, namespace: pay}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: web}]
  to: [{group: "", kind: Service, name: billing}]
---
"""


def test_a_backend_in_another_namespace_needs_a_reference_grant() -> None:
    (refused,) = routes(route("shop", CROSS))
    assert [c.cluster for c in refused.clusters] == [V1, INVALID_BACKEND]
    (granted,) = routes(route("shop", CROSS) + GRANT)
    assert [c.cluster for c in granted.clusters] == [V1, BILLING]


def test_a_rule_whose_backends_all_fail_answers_500() -> None:
    text = route(
        "shop",
        "  - backendRefs: [{name: billing, namespace: pay, port: 8080}]\n"
        "  - matches: [{path: {value: /x}}]\n"
        "    backendRefs: [{name: missing, port: 80}]\n",
    )
    for found in routes(text):
        assert found.direct_response == DirectResponse(
            status=500, body="no valid backend for this route rule\n"
        )
        assert found.clusters == ()


def test_listeners_take_routes_of_the_namespaces_they_allow() -> None:
    other = (
        route("shop", "  - backendRefs: [{name: shop-v1, port: 80}]\n")
        .replace("namespace: web}", "namespace: shop}")
        .replace("[{name: edge}]", "[{name: edge, namespace: web}]")
    )
    assert "shop.example.com" not in hosts(other)
    opened = SERVICES.replace(
        'hostname: "*.example.com"}',
        'hostname: "*.example.com", allowedRoutes: {namespaces: {from: All}}}',
    )
    snapshot = gateway_snapshot(
        [loaded.resource for loaded in load_text(opened + other, "t.yaml").resources],
        {},
        GatewaySpec(),
        "7",
    )
    names = [host.name for host in snapshot.route_tables[0].virtual_hosts]
    assert names == ["shop.example.com"]


def test_a_gateway_of_another_class_is_not_served() -> None:
    text = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: istio}
spec: {controllerName: example.com/other}
---
""" + route("shop", "  - backendRefs: [{name: shop-v1, port: 80}]\n")
    assert hosts(text) == {}


MESH = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop-mesh, namespace: web}
spec:
  parentRefs: [{group: "", kind: Service, name: shop, port: 80}]
  rules:
  - matches: [{headers: [{name: x-canary, value: "1"}]}]
    backendRefs: [{name: shop-v2, port: 80}]
  - backendRefs: [{name: shop-v1, port: 80}]
---
"""


def _sidecar_routes(text: str, namespace: str) -> tuple[Route, ...]:
    snapshot = sidecar_snapshot(
        resources(text),
        {},
        SidecarSpec(workload="caller", namespace=namespace, service_account="x"),
        "1",
    )
    check(snapshot)
    outbound = snapshot.route_tables[0]
    host = next(h for h in outbound.virtual_hosts if h.name == "shop.web.svc.cluster.local:80")
    return host.routes


def test_a_route_on_a_service_routes_the_sidecars_calls_to_it() -> None:
    found = _sidecar_routes(MESH, "web")
    assert [r.name for r in found] == ["httproute/web/shop-mesh/0", "httproute/web/shop-mesh/1"]
    assert [c.cluster for c in found[0].clusters] == [V2]
    assert found[0].match.headers == (
        HeaderMatch("x-canary", StringMatch(kind="exact", value="1")),
    )
    assert [c.cluster for c in found[1].clusters] == [V1]
    # A caller in another namespace is routed by the producer route too.
    assert _sidecar_routes(MESH, "pay")[0].name == "httproute/web/shop-mesh/0"


def test_a_consumer_route_replaces_the_producer_route_for_its_namespace() -> None:
    consumer = (
        MESH.replace("name: shop-mesh, namespace: web", "name: pay-view, namespace: pay")
        .replace("name: shop, port: 80", "name: shop, namespace: web, port: 80")
        .replace("{name: shop-v2, port: 80}", "{name: shop-v2, namespace: web, port: 80}")
        .replace("{name: shop-v1, port: 80}", "{name: shop-v1, namespace: web, port: 80}")
    )
    grant = (
        GRANT.replace("namespace: pay}", "namespace: web}")
        .replace("namespace: web}]", "namespace: pay}]")
        .replace("name: billing}", "name: shop-v1}")
    )
    text = MESH + consumer + grant
    assert _sidecar_routes(text, "pay")[0].name == "httproute/pay/pay-view/0"
    assert _sidecar_routes(text, "web")[0].name == "httproute/web/shop-mesh/0"
    # Without a grant, shop-v2 of web is not the consumer route's to name.
    pay = _sidecar_routes(text, "pay")
    assert pay[0].direct_response is not None
    assert [c.cluster for c in pay[1].clusters] == [V1]


def test_a_service_without_routes_keeps_its_default_route() -> None:
    found = _sidecar_routes("", "web")
    assert [r.name for r in found] == ["default"]
