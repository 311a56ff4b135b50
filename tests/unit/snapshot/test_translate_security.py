"""Istio security resources to one workload's Security and mTLS mode: scope, fields, precedence."""

from __future__ import annotations

import random

import msgspec
import pytest

from gossamer.resources import Resource, load_text
from gossamer.snapshot import (
    AuthzCondition,
    AuthzOperation,
    AuthzPolicy,
    AuthzRule,
    AuthzSource,
    InboundMtls,
    JwtProvider,
    Security,
)
from gossamer.snapshot.model import MtlsMode
from gossamer.snapshot.translate_security import (
    ROOT_NAMESPACE,
    SecurityIndex,
    SkippedPolicy,
    endpoint_mtls_mode,
    inbound_mtls,
    workload_security,
)

HTTPBIN = {"app": "httpbin", "version": "v1"}
SLEEP = {"app": "sleep"}


def resources(text: str) -> list[Resource]:
    result = load_text(text, "test.yaml")
    assert [p for p in result.problems if p.severity.name == "ERROR"] == []
    return [loaded.resource for loaded in result.resources]


def authz(namespace: str, name: str, spec: str = "{}", annotations: str = "{}") -> str:
    return f"""\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {namespace}, annotations: {annotations}}}
spec: {spec}
---
"""


SCOPES = resources(
    authz(
        ROOT_NAMESPACE,
        "mesh-deny",
        "{action: DENY, rules: [{to: [{operation: {paths: [/admin*]}}]}]}",
    )
    + authz(ROOT_NAMESPACE, "root-selected", "{selector: {matchLabels: {app: httpbin}}}")
    + authz("foo", "ns-wide", "{rules: [{}]}")
    + authz("foo", "httpbin-only", "{selector: {matchLabels: {app: httpbin, version: v1}}}")
    + authz("foo", "empty-selector", "{selector: {matchLabels: {}}, action: AUDIT, rules: [{}]}")
    + authz("bar", "other")
    + authz(
        "foo",
        "waypoint",
        "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp}]}",
    )
    + authz("foo", "ext", "{action: CUSTOM, provider: {name: opa}, rules: [{}]}")
    + authz("foo", "trial", "{action: DENY, rules: [{}]}", '{"istio.io/dry-run": "true"}')
    + """\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: mesh-jwt, namespace: istio-system}
spec:
  jwtRules: [{issuer: https://mesh.example}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: httpbin-jwt, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  jwtRules: [{issuer: https://b.example}, {issuer: https://a.example}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: gateway-jwt, namespace: foo}
spec:
  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}
  jwtRules: [{issuer: https://gateway.example}]
"""
)


def names(security: Security) -> list[str]:
    return [policy.name for policy in security.authorization]


@pytest.mark.parametrize(
    ("namespace", "labels", "expected"),
    [
        (
            "foo",
            HTTPBIN,
            [
                "foo/empty-selector",
                "foo/httpbin-only",
                "foo/ns-wide",
                "istio-system/mesh-deny",
                "istio-system/root-selected",
            ],
        ),
        ("foo", SLEEP, ["foo/empty-selector", "foo/ns-wide", "istio-system/mesh-deny"]),
        (
            "foo",
            {"app": "httpbin"},
            [
                "foo/empty-selector",
                "foo/ns-wide",
                "istio-system/mesh-deny",
                "istio-system/root-selected",
            ],
        ),
        ("bar", HTTPBIN, ["bar/other", "istio-system/mesh-deny", "istio-system/root-selected"]),
        ("baz", {}, ["istio-system/mesh-deny"]),
        (
            ROOT_NAMESPACE,
            {"app": "httpbin"},
            ["istio-system/mesh-deny", "istio-system/root-selected"],
        ),
    ],
    ids=["selected", "namespace", "partial labels", "other namespace", "mesh only", "root"],
)
def test_which_policies_apply(namespace: str, labels: dict[str, str], expected: list[str]) -> None:
    assert names(workload_security(SCOPES, namespace, labels)) == expected


def test_jwt_rules_in_scope_in_policy_order() -> None:
    issuers = [(p.policy, p.issuer) for p in workload_security(SCOPES, "foo", HTTPBIN).jwt]
    assert issuers == [
        ("foo/httpbin-jwt", "https://b.example"),
        ("foo/httpbin-jwt", "https://a.example"),
        ("istio-system/mesh-jwt", "https://mesh.example"),
    ]
    assert [p.issuer for p in workload_security(SCOPES, "foo", SLEEP).jwt] == [
        "https://mesh.example"
    ]


def test_unenforced_policies_are_listed() -> None:
    assert SecurityIndex(SCOPES).skipped == (
        SkippedPolicy("foo/ext", "CUSTOM action: no external authorizer in Gossamer"),
        SkippedPolicy("foo/trial", "istio.io/dry-run: logged by Istio, never enforced"),
    )


def test_trust_anchors_are_passed_through() -> None:
    security = workload_security(
        [], "foo", {}, roots=("-----BEGIN CERTIFICATE-----",), trust_domain="example.org"
    )
    assert security == Security(trust_domain="example.org", roots=("-----BEGIN CERTIFICATE-----",))


EVERY_FIELD = resources(
    """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: everything, namespace: foo}
spec:
  action: DENY
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/a/sa/b]
        notPrincipals: ["*/sa/evil"]
        requestPrincipals: [iss/sub]
        notRequestPrincipals: [iss/bad]
        namespaces: [a]
        notNamespaces: [b]
        ipBlocks: [10.0.0.0/8]
        notIpBlocks: [10.1.0.0/16]
        remoteIpBlocks: [1.2.3.4]
        notRemoteIpBlocks: [1.2.3.5]
    - source:
        serviceAccounts: [web/frontend]
        notServiceAccounts: [web/batch]
    to:
    - operation:
        hosts: [a.example.com]
        notHosts: [b.example.com]
        ports: ["8080"]
        notPorts: ["9090"]
        methods: [GET]
        notMethods: [DELETE]
        paths: [/api/*]
        notPaths: [/api/admin]
    when:
    - key: request.headers[X-Team]
      values: [blue]
      notValues: [red]
  - {}
"""
)


def test_every_authorization_field() -> None:
    security = workload_security(EVERY_FIELD, "foo", {}, trust_domain="example.org")
    assert security.authorization == (
        AuthzPolicy(
            name="foo/everything",
            action="DENY",
            rules=(
                AuthzRule(
                    sources=(
                        AuthzSource(
                            principals=("cluster.local/ns/a/sa/b",),
                            not_principals=("*/sa/evil",),
                            request_principals=("iss/sub",),
                            not_request_principals=("iss/bad",),
                            namespaces=("a",),
                            not_namespaces=("b",),
                            ip_blocks=("10.0.0.0/8",),
                            not_ip_blocks=("10.1.0.0/16",),
                            remote_ip_blocks=("1.2.3.4",),
                            not_remote_ip_blocks=("1.2.3.5",),
                        ),
                        AuthzSource(
                            principals=("example.org/ns/web/sa/frontend",),
                            not_principals=("example.org/ns/web/sa/batch",),
                        ),
                    ),
                    operations=(
                        AuthzOperation(
                            hosts=("a.example.com",),
                            not_hosts=("b.example.com",),
                            ports=("8080",),
                            not_ports=("9090",),
                            methods=("GET",),
                            not_methods=("DELETE",),
                            paths=("/api/*",),
                            not_paths=("/api/admin",),
                        ),
                    ),
                    conditions=(
                        AuthzCondition(
                            key="request.headers[X-Team]", values=("blue",), not_values=("red",)
                        ),
                    ),
                ),
                AuthzRule(),
            ),
        ),
    )


def test_a_malformed_service_account_matches_nobody() -> None:
    text = authz("foo", "sa", "{rules: [{from: [{source: {serviceAccounts: [frontend]}}]}]}")
    policy = workload_security(resources(text), "foo", {}).authorization[0]
    assert policy.rules[0].sources[0].principals == ("frontend",)


EVERY_JWT_FIELD = resources(
    """\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  jwtRules:
  - issuer: https://issuer.example
    audiences: [api, web]
    jwksUri: https://issuer.example/jwks.json
    fromHeaders: [{name: X-Jwt-Assertion, prefix: "Bearer "}, {name: X-Raw-Token}]
    fromParams: [token]
    fromCookies: [session]
    forwardOriginalToken: true
    outputPayloadToHeader: X-Jwt-Payload
    outputClaimToHeaders: [{header: X-Sub, claim: sub}]
    timeout: 1.5s
  - issuer: https://inline.example
    jwks: '{"keys": []}'
"""
)


def test_every_jwt_field() -> None:
    assert workload_security(EVERY_JWT_FIELD, "foo", {}).jwt == (
        JwtProvider(
            issuer="https://issuer.example",
            audiences=("api", "web"),
            jwks_uri="https://issuer.example/jwks.json",
            from_headers=(("x-jwt-assertion", "Bearer "), ("x-raw-token", "")),
            from_params=("token",),
            from_cookies=("session",),
            forward_original_token=True,
            output_payload_to_header="x-jwt-payload",
            output_claim_to_headers=(("x-sub", "sub"),),
            timeout=1.5,
            policy="foo/jwt",
        ),
        JwtProvider(issuer="https://inline.example", jwks='{"keys": []}', policy="foo/jwt"),
    )


def test_same_resources_in_any_order_give_the_same_security() -> None:
    everything = [*SCOPES, *EVERY_FIELD, *EVERY_JWT_FIELD]
    expected = msgspec.json.encode(workload_security(everything, "foo", HTTPBIN))
    shuffled = list(everything)
    for seed in range(5):
        random.Random(seed).shuffle(shuffled)
        assert msgspec.json.encode(workload_security(shuffled, "foo", HTTPBIN)) == expected


def test_index_converts_each_policy_once() -> None:
    index = SecurityIndex(SCOPES)
    first = index.for_workload("foo", HTTPBIN).authorization
    second = index.for_workload("foo", SLEEP).authorization
    assert first[0] is second[0]
    assert repr(index) == "<SecurityIndex 6 authorization, 2 request auth, 0 peer auth>"


def peer(namespace: str, name: str, spec: str, created: str | None = None) -> str:
    stamp = f", creationTimestamp: '{created}'" if created else ""
    return f"""\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: {name}, namespace: {namespace}{stamp}}}
spec: {spec}
---
"""


MESH_STRICT = peer(ROOT_NAMESPACE, "default", "{mtls: {mode: STRICT}}")
MESH_UNSET = peer(ROOT_NAMESPACE, "default", "{}")
NS_PERMISSIVE = peer("foo", "default", "{mtls: {mode: PERMISSIVE}}")
NS_UNSET = peer("foo", "default", "{mtls: {mode: UNSET}}")
WORKLOAD_DISABLE = peer(
    "foo",
    "httpbin",
    "{selector: {matchLabels: {app: httpbin}}, mtls: {mode: DISABLE},"
    " portLevelMtls: {8080: {mode: STRICT}, '9090': {mode: UNSET}}}",
)
WORKLOAD_UNSET = peer(
    "foo",
    "httpbin",
    "{selector: {matchLabels: {app: httpbin}}, portLevelMtls: {8080: {mode: DISABLE}}}",
)


@pytest.mark.parametrize(
    ("manifests", "expected"),
    [
        ("", InboundMtls("PERMISSIVE")),
        (MESH_STRICT, InboundMtls("STRICT")),
        (MESH_UNSET, InboundMtls("PERMISSIVE")),
        (MESH_STRICT + NS_PERMISSIVE, InboundMtls("PERMISSIVE")),
        (MESH_STRICT + NS_UNSET, InboundMtls("STRICT")),
        (
            MESH_STRICT + NS_PERMISSIVE + WORKLOAD_DISABLE,
            InboundMtls("DISABLE", ports=((8080, "STRICT"), (9090, "DISABLE"))),
        ),
        (
            MESH_STRICT + NS_UNSET + WORKLOAD_UNSET,
            InboundMtls("STRICT", ports=((8080, "DISABLE"),)),
        ),
        (NS_PERMISSIVE + WORKLOAD_UNSET, InboundMtls("PERMISSIVE", ports=((8080, "DISABLE"),))),
        (
            MESH_STRICT
            + peer(
                ROOT_NAMESPACE,
                "root-selector",
                "{selector: {matchLabels: {app: httpbin}}, mtls: {mode: DISABLE}}",
            ),
            InboundMtls("STRICT"),
        ),
        (
            MESH_STRICT
            + peer(
                "foo", "sleep", "{selector: {matchLabels: {app: sleep}}, mtls: {mode: DISABLE}}"
            ),
            InboundMtls("STRICT"),
        ),
        (MESH_STRICT + peer("bar", "default", "{mtls: {mode: DISABLE}}"), InboundMtls("STRICT")),
        (
            peer("foo", "b-newer", "{mtls: {mode: STRICT}}", "2024-02-01T00:00:00Z")
            + peer("foo", "a-older", "{mtls: {mode: DISABLE}}", "2024-01-01T00:00:00Z"),
            InboundMtls("DISABLE"),
        ),
        (
            peer("foo", "b", "{selector: {matchLabels: {app: httpbin}}, mtls: {mode: STRICT}}")
            + peer("foo", "a", "{selector: {matchLabels: {version: v1}}, mtls: {mode: DISABLE}}"),
            InboundMtls("DISABLE"),
        ),
        (
            peer(
                "foo",
                "b",
                "{selector: {matchLabels: {app: httpbin}}, mtls: {mode: STRICT}}",
                "2023-01-01T00:00:00Z",
            )
            + peer("foo", "a", "{selector: {matchLabels: {version: v1}}, mtls: {mode: DISABLE}}"),
            InboundMtls("STRICT"),
        ),
    ],
    ids=[
        "nothing: permissive",
        "mesh strict",
        "mesh unset: permissive",
        "namespace overrides mesh",
        "namespace unset inherits mesh",
        "workload and ports override, unset port inherits",
        "workload unset inherits, port overrides",
        "no mesh policy",
        "root-namespace selector applies to no workload",
        "selector that does not match",
        "other namespace",
        "oldest namespace policy wins",
        "workload policies by name without timestamps",
        "a timestamp is older than none",
    ],
)
def test_peer_authentication_precedence(manifests: str, expected: InboundMtls) -> None:
    assert inbound_mtls(resources(manifests), "foo", HTTPBIN) == expected


@pytest.mark.parametrize(
    ("port", "mode"), [(None, "DISABLE"), (8080, "STRICT"), (9090, "DISABLE"), (80, "DISABLE")]
)
def test_endpoint_mode_by_port(port: int | None, mode: MtlsMode) -> None:
    manifests = resources(MESH_STRICT + NS_PERMISSIVE + WORKLOAD_DISABLE)
    assert endpoint_mtls_mode(manifests, "foo", HTTPBIN, port) == mode
    assert endpoint_mtls_mode(manifests, "foo", SLEEP, port) == "PERMISSIVE"


def test_root_namespace_workload_takes_the_mesh_policy() -> None:
    manifests = resources(MESH_STRICT + WORKLOAD_DISABLE)
    assert SecurityIndex(manifests).mtls(ROOT_NAMESPACE, HTTPBIN) == InboundMtls("STRICT")


def test_a_configured_root_namespace() -> None:
    manifests = resources(peer("istio-config", "default", "{mtls: {mode: STRICT}}"))
    index = SecurityIndex(manifests, root_namespace="istio-config")
    assert index.endpoint_mode("foo", {}) == "STRICT"
    assert SecurityIndex(manifests).endpoint_mode("foo", {}) == "PERMISSIVE"
