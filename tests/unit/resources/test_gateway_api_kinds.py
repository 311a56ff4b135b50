"""Gateway API kinds: every field loads, the CRD's rules are errors, and `validate` reports status."""

from __future__ import annotations

from pathlib import Path

import pytest

from gossamer.resources import Severity, validate_paths
from gossamer.resources.kinds.gateway_api import Gateway, GatewayClass, ReferenceGrant
from gossamer.resources.kinds.gateway_api_routes import GRPCRoute, HTTPRoute, TCPRoute, TLSRoute
from gossamer.resources.kinds.istio_networking import Gateway as IstioGateway
from gossamer.resources.loader import load_paths, load_text
from gossamer.resources.registry import lookup

EXAMPLES = Path(__file__).resolve().parent / "gateway_api_examples"


def _lines(text: str, tmp_path: Path, *, strict: bool = False) -> list[str]:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    return [
        f"{p.line}: {p.severity.value}: {p.path}: {p.message}"
        for p in validate_paths([path], strict=strict).problems
    ]


def test_every_example_loads_without_errors() -> None:
    result = load_paths([EXAMPLES])
    assert [str(p) for p in result.problems if p.severity is Severity.ERROR] == []
    kinds = [type(loaded.resource) for loaded in result.resources]
    assert kinds == [
        GatewayClass,
        Gateway,
        ReferenceGrant,
        HTTPRoute,
        HTTPRoute,
        GRPCRoute,
        TLSRoute,
        TCPRoute,
    ]


def test_every_field_of_the_examples_is_kept() -> None:
    resources = [loaded.resource for loaded in load_paths([EXAMPLES]).resources]
    gateway = resources[1]
    assert isinstance(gateway, Gateway)
    https = gateway.spec.listeners[1]
    assert https.tls is not None and [r.name for r in https.tls.certificate_refs] == [
        "shop-cert",
        "shop-cert-ec",
    ]
    route = resources[3]
    assert isinstance(route, HTTPRoute)
    rule = route.spec.rules[0]
    assert [f.type for f in rule.filters][:4] == [
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestMirror",
        "RequestMirror",
    ]
    assert rule.matches[0].query_params[1].type == "RegularExpression"
    assert rule.backend_refs[0].filters[1].response_header_modifier is not None
    assert rule.timeouts is not None and rule.timeouts.backend_request == "2s"
    grant = resources[2]
    assert isinstance(grant, ReferenceGrant)
    assert grant.grants(("gateway.networking.k8s.io", "Gateway", "infra"), ("", "Secret", "x"))
    assert not grant.grants(
        ("gateway.networking.k8s.io", "HTTPRoute", "infra"), ("", "Secret", "x")
    )


def test_the_two_gateway_kinds_are_told_apart_by_group() -> None:
    assert lookup("gateway.networking.k8s.io/v1", "Gateway") is Gateway
    assert lookup("gateway.networking.k8s.io/v1beta1", "HTTPRoute") is HTTPRoute
    assert lookup("networking.istio.io/v1", "Gateway") is IstioGateway


def test_an_istio_and_a_gateway_api_gateway_may_share_a_name(tmp_path: Path) -> None:
    text = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
"""
    assert _lines(text, tmp_path) == []


def test_strict_names_what_is_not_acted_on() -> None:
    lines = [
        f"{p.file.rsplit('/', 1)[-1]}:{p.line}: {p.path}"
        for p in validate_paths([EXAMPLES], strict=True).problems
        if p.severity is Severity.NOTICE
    ]
    assert lines == [
        "gateway.yaml:9: spec.parametersRef",
        "gateway.yaml:22: spec.defaultScope",
        "gateway.yaml:23: spec.addresses",
        "gateway.yaml:26: spec.infrastructure",
        "gateway.yaml:30: spec.allowedListeners",
        "gateway.yaml:35: spec.tls",
        "gateway.yaml:72: spec.listeners[1].tls.options",
        "httproute.yaml:15: spec.useDefaultGateways",
        "httproute.yaml:58: spec.rules[0].filters[5].extensionRef",
        "httproute.yaml:60: spec.rules[0].filters[6].externalAuth",
        "httproute.yaml:84: spec.rules[0].sessionPersistence",
        "httproute.yaml:114: spec.rules[4].sessionPersistence",
        "kept-routes.yaml:3: kind",
        "kept-routes.yaml:29: kind",
        "kept-routes.yaml:40: kind",
    ]


ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: shop}}
spec:
  parentRefs: [{{name: web}}]
  rules:
{rules}"""


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (
            "  - matches: [{path: {type: PathPrefix, value: api}}]\n",
            "7: error: spec.rules[0].matches[0].path.value: must start with '/'",
        ),
        (
            "  - filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]\n"
            "    backendRefs: [{name: shop, port: 80}]\n",
            "8: error: spec.rules[0].backendRefs: a RequestRedirect rule takes no backendRefs",
        ),
        (
            "  - filters: [{type: RequestHeaderModifier}]\n",
            "7: error: spec.rules[0].filters[0]: type RequestHeaderModifier needs "
            "requestHeaderModifier and no other filter field",
        ),
        (
            "  - backendRefs: [{name: shop}]\n",
            "7: error: spec.rules[0].backendRefs[0]: a Service backend needs a port",
        ),
        (
            "  - matches: [{path: {value: /a}}, {path: {value: /b}}]\n"
            "    filters:\n"
            "    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, "
            "replacePrefixMatch: /}}}\n",
            "9: error: spec.rules[0].filters[0].urlRewrite.path: ReplacePrefixMatch needs "
            "exactly one PathPrefix match in the rule",
        ),
        (
            "  - backendRefs: [{name: shop, port: 80, weight: 2000000}]\n",
            "7: error: spec.rules[0].backendRefs[0].weight: must be between 0 and 1000000, "
            "not 2000000",
        ),
    ],
)
def test_what_the_crd_refuses_is_an_error(rules: str, expected: str, tmp_path: Path) -> None:
    assert expected in _lines(ROUTE.format(rules=rules), tmp_path)


def test_a_gateway_needs_certificates_on_https_and_unique_listener_names() -> None:
    text = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web}
spec:
  gatewayClassName: istio
  listeners:
  - {name: web, port: 80, protocol: HTTP}
  - {name: web, port: 443, protocol: HTTPS}
"""
    problems = [f"{p.line}: {p.path}: {p.message}" for p in load_text(text, "gw.yaml").problems]
    assert problems == [
        "8: spec.listeners[1].name: listener web is already spec.listeners[0]",
        "8: spec.listeners[1].tls: an HTTPS listener needs tls.certificateRefs",
    ]


MESH = """\
apiVersion: v1
kind: Service
metadata: {name: shop, namespace: web}
spec:
  selector: {app: shop}
  ports: [{name: http, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: "*.example.com"}
  - {name: tcp, port: 9000, protocol: TCP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: web}
spec:
  parentRefs:
  - {name: edge, namespace: infra}
  - {name: missing}
  - {name: edge, namespace: infra, sectionName: https}
  - {kind: Service, group: "", name: shop, port: 8080}
  hostnames: [shop.example.com]
  rules:
  - backendRefs:
    - {name: shop, port: 80}
    - {name: billing, namespace: pay, port: 80}
    - {kind: Bucket, group: storage.example.com, name: assets}
"""


def test_route_status_is_reported_at_its_field(tmp_path: Path) -> None:
    lines = [line for line in _lines(MESH, tmp_path) if "selector" not in line]
    assert lines == [
        "15: warning: spec.listeners[1].protocol: Programmed False (UnsupportedProtocol): "
        "protocol TCP is not served; the mesh's gateway serves HTTP and HTTPS listeners",
        "22: warning: spec.parentRefs[0]: Accepted False (NotAllowedByListeners): no listener "
        "of Gateway infra/edge takes HTTPRoutes of namespace web; the route is not attached there",
        "23: warning: spec.parentRefs[1]: Accepted False (NoMatchingParent): no Gateway "
        "web/missing; the route is not attached there",
        "24: warning: spec.parentRefs[2]: Accepted False (NoMatchingParent): Gateway infra/edge "
        "has no such listener; the route is not attached there",
        "25: warning: spec.parentRefs[3]: Accepted False (NoMatchingParent): Service web/shop "
        "has no port 8080; the route is not attached there",
        "30: warning: spec.rules[0].backendRefs[1]: ResolvedRefs False (RefNotPermitted): no "
        "ReferenceGrant in namespace pay lets HTTPRoutes of web refer to Service billing; "
        "requests for this backend get 500 (503 when others of the rule resolve)",
        "31: warning: spec.rules[0].backendRefs[2]: ResolvedRefs False (InvalidKind): backend "
        "web/assets is a storage.example.com/Bucket, not a Service; requests for this backend "
        "get 500 (503 when others of the rule resolve)",
    ]


def test_a_gateway_of_an_unknown_class_is_reported(tmp_path: Path) -> None:
    text = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web}
spec:
  gatewayClassName: nginx
  listeners: [{name: http, port: 80, protocol: HTTP}]
"""
    assert _lines(text, tmp_path) == [
        "5: warning: spec.gatewayClassName: Accepted False (InvalidParameters): no GatewayClass "
        "nginx in the files; the mesh's gateway serves classes gossamer and istio and those of "
        "its controllers"
    ]
