"""AuthorizationPolicy decisions, row by row, from the examples of Istio's documentation.

The rows follow Istio's tasks (HTTP traffic, explicit deny, JWT claims, ingress IP-based) and the
reference page: the policies of the example, one request, the expected outcome and the policy
that decided it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import pytest

from gossamer.security.authz import NO_ALLOW_MATCHED, Authorizer, AuthzDecision, AuthzRequest
from gossamer.snapshot import AuthzCondition, AuthzOperation, AuthzPolicy, AuthzRule, AuthzSource
from gossamer.snapshot.model import AuthzAction

PRODUCTPAGE = "cluster.local/ns/default/sa/bookinfo-productpage"
REVIEWS = "cluster.local/ns/default/sa/bookinfo-reviews"
SLEEP = "cluster.local/ns/foo/sa/sleep"
JWT_PRINCIPAL = "testing@secure.istio.io/testing@secure.istio.io"


def policy(name: str, *rules: AuthzRule, action: AuthzAction = "ALLOW") -> AuthzPolicy:
    return AuthzPolicy(name=name, action=action, rules=rules)


def rule(
    *,
    source: AuthzSource | None = None,
    to: AuthzOperation | None = None,
    when: tuple[AuthzCondition, ...] = (),
) -> AuthzRule:
    return AuthzRule(
        sources=(source,) if source else (),
        operations=(to,) if to else (),
        conditions=when,
    )


def request(**changes: object) -> AuthzRequest:
    base = AuthzRequest(
        method="GET",
        path="/productpage",
        host="productpage.default.svc.cluster.local:9080",
        port=9080,
        source_principal=SLEEP,
        source_ip="10.0.0.7",
        destination_ip="10.0.0.9",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# The policies of Istio's tasks, in namespace `default` (bookinfo) and `foo` (httpbin).
ALLOW_NOTHING = policy("default/allow-nothing")
ALLOW_ALL = policy("foo/allow-all", AuthzRule())
DENY_ALL = policy("foo/deny-all", AuthzRule(), action="DENY")
DENY_NOTHING = policy("foo/deny-nothing", action="DENY")
PRODUCTPAGE_VIEWER = policy("default/productpage-viewer", rule(to=AuthzOperation(methods=("GET",))))
DETAILS_VIEWER = policy(
    "default/details-viewer",
    rule(source=AuthzSource(principals=(PRODUCTPAGE,)), to=AuthzOperation(methods=("GET",))),
)
RATINGS_VIEWER = policy(
    "default/ratings-viewer",
    rule(source=AuthzSource(principals=(REVIEWS,)), to=AuthzOperation(methods=("GET",))),
)
DENY_GET = policy("foo/deny-method-get", rule(to=AuthzOperation(methods=("GET",))), action="DENY")
DENY_GET_UNLESS_ADMIN = policy(
    "foo/deny-method-get",
    rule(
        to=AuthzOperation(methods=("GET",)),
        when=(AuthzCondition("request.headers[x-token]", not_values=("admin",)),),
    ),
    action="DENY",
)
ALLOW_PATH_IP = policy(
    "foo/allow-path-ip", rule(to=AuthzOperation(methods=("GET",), paths=("/ip",)))
)
REQUIRE_JWT = policy(
    "foo/require-jwt", rule(source=AuthzSource(request_principals=(JWT_PRINCIPAL,)))
)
REQUIRE_GROUP1 = policy(
    "foo/require-jwt",
    rule(
        source=AuthzSource(request_principals=(JWT_PRINCIPAL,)),
        when=(AuthzCondition("request.auth.claims[groups]", values=("group1",)),),
    ),
)
INGRESS_IP = policy(
    "istio-system/ingress-policy",
    rule(source=AuthzSource(ip_blocks=("1.2.3.4", "5.6.7.0/24"))),
)
INGRESS_REMOTE_IP = policy(
    "istio-system/ingress-policy",
    rule(source=AuthzSource(remote_ip_blocks=("1.2.3.4", "5.6.7.0/24"))),
)
INGRESS_DENY_REMOTE_IP = policy(
    "istio-system/ingress-policy",
    rule(source=AuthzSource(remote_ip_blocks=("1.2.3.4", "5.6.7.0/24"))),
    action="DENY",
)
# The reference page's first example: a principal or namespace `test`; GET /info* or POST /data;
# a token from Google.
REFERENCE_HTTPBIN = AuthzPolicy(
    name="foo/httpbin",
    rules=(
        AuthzRule(
            sources=(
                AuthzSource(principals=("cluster.local/ns/default/sa/sleep",)),
                AuthzSource(namespaces=("test",)),
            ),
            operations=(
                AuthzOperation(methods=("GET",), paths=("/info*",)),
                AuthzOperation(methods=("POST",), paths=("/data",)),
            ),
            conditions=(
                AuthzCondition("request.auth.claims[iss]", values=("https://accounts.google.com",)),
            ),
        ),
    ),
)
GOOGLE = {"iss": "https://accounts.google.com", "sub": "alice"}
DENY_DEV_POST = policy(
    "foo/httpbin",
    rule(source=AuthzSource(namespaces=("dev",)), to=AuthzOperation(methods=("POST",))),
    action="DENY",
)
DENY_POST_8080 = policy(
    "foo/httpbin", rule(to=AuthzOperation(methods=("POST",), ports=("8080",))), action="DENY"
)
AUDIT_PROFILE = policy(
    "ns1/anyname",
    rule(to=AuthzOperation(methods=("GET",), paths=("/user/profile/*",))),
    action="AUDIT",
)
# The reference's Source and Operation examples.
SOURCE_EXAMPLE = policy(
    "foo/source",
    rule(
        source=AuthzSource(
            principals=("admin", "dev"), namespaces=("prod", "test"), not_ip_blocks=("203.0.113.4",)
        )
    ),
)
OPERATION_EXAMPLE = policy(
    "foo/operation",
    rule(
        to=AuthzOperation(hosts=("*.example.com",), methods=("GET", "HEAD"), not_paths=("/admin*",))
    ),
)
DENY_PLAINTEXT = policy(
    "istio-system/require-mtls",
    rule(source=AuthzSource(not_principals=("*",))),
    action="DENY",
)


@dataclass(frozen=True)
class Row:
    name: str
    policies: tuple[AuthzPolicy, ...]
    request: AuthzRequest
    allowed: bool
    policy: str
    audited: tuple[str, ...] = field(default=())


def row(
    name: str,
    policies: tuple[AuthzPolicy, ...],
    req: AuthzRequest,
    allowed: bool,
    decided_by: str,
    audited: tuple[str, ...] = (),
) -> Row:
    return Row(name, policies, req, allowed, decided_by, audited)


def claims_request(claims: Mapping[str, object], **changes: object) -> AuthzRequest:
    return request(request_principal=JWT_PRINCIPAL, claims=claims, **changes)


ROWS = [
    # No policy at all: Istio allows.
    row("no policies", (), request(), True, ""),
    # Authorization for HTTP traffic (bookinfo).
    row("allow-nothing denies", (ALLOW_NOTHING,), request(), False, NO_ALLOW_MATCHED),
    row(
        "productpage-viewer allows GET",
        (ALLOW_NOTHING, PRODUCTPAGE_VIEWER),
        request(),
        True,
        "default/productpage-viewer",
    ),
    row(
        "productpage-viewer does not allow POST",
        (ALLOW_NOTHING, PRODUCTPAGE_VIEWER),
        request(method="POST"),
        False,
        NO_ALLOW_MATCHED,
    ),
    row(
        "details-viewer allows productpage's account",
        (ALLOW_NOTHING, DETAILS_VIEWER),
        request(source_principal=PRODUCTPAGE, path="/details/0"),
        True,
        "default/details-viewer",
    ),
    row(
        "details-viewer refuses another account",
        (ALLOW_NOTHING, DETAILS_VIEWER),
        request(path="/details/0"),
        False,
        NO_ALLOW_MATCHED,
    ),
    row(
        "ratings-viewer refuses a plaintext peer",
        (RATINGS_VIEWER,),
        request(source_principal="", path="/ratings/0"),
        False,
        NO_ALLOW_MATCHED,
    ),
    # ALLOW with no rules, allow-all, deny-all.
    row("ALLOW with a rule {} allows all", (ALLOW_ALL,), request(), True, "foo/allow-all"),
    row("DENY with a rule {} denies all", (DENY_ALL, ALLOW_ALL), request(), False, "foo/deny-all"),
    row("DENY without rules denies nothing", (DENY_NOTHING,), request(), True, ""),
    row(
        "DENY without rules leaves ALLOW to decide",
        (DENY_NOTHING, ALLOW_NOTHING),
        request(),
        False,
        NO_ALLOW_MATCHED,
    ),
    # Explicit deny (httpbin).
    row("deny GET", (DENY_GET,), request(), False, "foo/deny-method-get"),
    row("deny GET lets POST through", (DENY_GET,), request(method="POST"), True, ""),
    row(
        "deny GET unless x-token admin: admin passes",
        (DENY_GET_UNLESS_ADMIN,),
        request(headers={"x-token": "admin"}),
        True,
        "",
    ),
    row(
        "deny GET unless x-token admin: guest is denied",
        (DENY_GET_UNLESS_ADMIN,),
        request(headers={"x-token": "guest"}),
        False,
        "foo/deny-method-get",
    ),
    row(
        "deny GET unless x-token admin: no header is denied",
        (DENY_GET_UNLESS_ADMIN,),
        request(headers={}),
        False,
        "foo/deny-method-get",
    ),
    row(
        "allow-path-ip allows /ip for an admin token",
        (DENY_GET_UNLESS_ADMIN, ALLOW_PATH_IP),
        request(path="/ip", headers={"x-token": "admin"}),
        True,
        "foo/allow-path-ip",
    ),
    row(
        "allow-path-ip does not allow /headers",
        (DENY_GET_UNLESS_ADMIN, ALLOW_PATH_IP),
        request(path="/headers", headers={"x-token": "admin"}),
        False,
        NO_ALLOW_MATCHED,
    ),
    row(
        "DENY comes before ALLOW",
        (ALLOW_PATH_IP, DENY_GET_UNLESS_ADMIN),
        request(path="/ip", headers={"x-token": "guest"}),
        False,
        "foo/deny-method-get",
    ),
    # JWT.
    row(
        "require-jwt allows its principal",
        (REQUIRE_JWT,),
        claims_request({}),
        True,
        "foo/require-jwt",
    ),
    row("require-jwt refuses no token", (REQUIRE_JWT,), request(), False, NO_ALLOW_MATCHED),
    row(
        "any token: requestPrincipals *",
        (policy("foo/any-jwt", rule(source=AuthzSource(request_principals=("*",)))),),
        request(request_principal="https://issuer/bob"),
        True,
        "foo/any-jwt",
    ),
    row(
        "any token: requestPrincipals * refuses none",
        (policy("foo/any-jwt", rule(source=AuthzSource(request_principals=("*",)))),),
        request(),
        False,
        NO_ALLOW_MATCHED,
    ),
    row(
        "list claim: group1 among groups",
        (REQUIRE_GROUP1,),
        claims_request({"groups": ["group1", "group2"]}),
        True,
        "foo/require-jwt",
    ),
    row(
        "list claim: group1 missing",
        (REQUIRE_GROUP1,),
        claims_request({"groups": ["group2"]}),
        False,
        NO_ALLOW_MATCHED,
    ),
    row(
        "nested claim",
        (
            policy(
                "foo/nested",
                rule(
                    when=(
                        AuthzCondition(
                            "request.auth.claims[nested][key1]", values=("valueA", "valueB")
                        ),
                    )
                ),
            ),
        ),
        claims_request({"nested": {"key1": "valueB"}}),
        True,
        "foo/nested",
    ),
    row(
        "nested claim on a string is absent",
        (
            policy(
                "foo/nested",
                rule(when=(AuthzCondition("request.auth.claims[nested][key1]", values=("*",)),)),
            ),
        ),
        claims_request({"nested": "flat"}),
        False,
        NO_ALLOW_MATCHED,
    ),
    row(
        "space-delimited scope claim",
        (
            policy(
                "foo/scope",
                rule(when=(AuthzCondition("request.auth.claims[scope]", values=("write",)),)),
            ),
        ),
        claims_request({"scope": "read write"}),
        True,
        "foo/scope",
    ),
    row(
        "audiences from a list aud",
        (
            policy(
                "foo/aud", rule(when=(AuthzCondition("request.auth.audiences", values=("api",)),))
            ),
        ),
        claims_request({"aud": ["web", "api"]}),
        True,
        "foo/aud",
    ),
    row(
        "presenter from azp, notValues",
        (
            policy(
                "foo/azp",
                rule(when=(AuthzCondition("request.auth.presenter", not_values=("trusted-*",)),)),
                action="DENY",
            ),
        ),
        claims_request({"azp": "evil-client"}),
        False,
        "foo/azp",
    ),
    # The reference page.
    row(
        "reference example: sleep GETs /info/x with a Google token",
        (REFERENCE_HTTPBIN,),
        request(
            source_principal="cluster.local/ns/default/sa/sleep", path="/info/x", claims=GOOGLE
        ),
        True,
        "foo/httpbin",
    ),
    row(
        "reference example: namespace test POSTs /data",
        (REFERENCE_HTTPBIN,),
        request(
            source_principal="cluster.local/ns/test/sa/any",
            method="POST",
            path="/data",
            claims=GOOGLE,
        ),
        True,
        "foo/httpbin",
    ),
    row(
        "reference example: POST /data/x is not /data",
        (REFERENCE_HTTPBIN,),
        request(
            source_principal="cluster.local/ns/test/sa/any",
            method="POST",
            path="/data/x",
            claims=GOOGLE,
        ),
        False,
        NO_ALLOW_MATCHED,
    ),
    row(
        "reference example: another issuer",
        (REFERENCE_HTTPBIN,),
        request(
            source_principal="cluster.local/ns/test/sa/any",
            path="/info",
            claims={"iss": "https://evil"},
        ),
        False,
        NO_ALLOW_MATCHED,
    ),
    row(
        "deny POST from dev",
        (DENY_DEV_POST,),
        request(source_principal="cluster.local/ns/dev/sa/x", method="POST"),
        False,
        "foo/httpbin",
    ),
    row(
        "deny POST from dev lets prod through",
        (DENY_DEV_POST,),
        request(source_principal="cluster.local/ns/prod/sa/x", method="POST"),
        True,
        "",
    ),
    row(
        "deny POST on 8080",
        (DENY_POST_8080,),
        request(method="POST", port=8080),
        False,
        "foo/httpbin",
    ),
    row("deny POST on 8080, not 9080", (DENY_POST_8080,), request(method="POST"), True, ""),
    row(
        "AUDIT marks and does not decide",
        (AUDIT_PROFILE, ALLOW_NOTHING),
        request(path="/user/profile/alice"),
        False,
        NO_ALLOW_MATCHED,
        ("ns1/anyname",),
    ),
    row(
        "AUDIT alone allows",
        (AUDIT_PROFILE,),
        request(path="/user/profile/alice"),
        True,
        "",
        ("ns1/anyname",),
    ),
    row("AUDIT not matching", (AUDIT_PROFILE,), request(path="/user/other"), True, ""),
    row(
        "source example: admin in prod from another IP",
        (SOURCE_EXAMPLE,),
        request(source_principal="admin"),
        False,
        NO_ALLOW_MATCHED,
    ),
    row(
        "source example: principal, namespace and IP all hold",
        (
            policy(
                "foo/source",
                rule(
                    source=AuthzSource(
                        principals=("*/sa/admin",),
                        namespaces=("prod", "test"),
                        not_ip_blocks=("203.0.113.4",),
                    )
                ),
            ),
        ),
        request(source_principal="cluster.local/ns/prod/sa/admin"),
        True,
        "foo/source",
    ),
    row(
        "source example: the excluded IP",
        (
            policy(
                "foo/source",
                rule(source=AuthzSource(namespaces=("prod",), not_ip_blocks=("203.0.113.4",))),
            ),
        ),
        request(source_principal="cluster.local/ns/prod/sa/admin", source_ip="203.0.113.4"),
        False,
        NO_ALLOW_MATCHED,
    ),
    row(
        "operation example: host suffix, any case, with a port",
        (OPERATION_EXAMPLE,),
        request(method="HEAD", host="API.Example.com:8443", path="/v1"),
        True,
        "foo/operation",
    ),
    row(
        "operation example: notPaths /admin*",
        (OPERATION_EXAMPLE,),
        request(host="api.example.com", path="/admin/users"),
        False,
        NO_ALLOW_MATCHED,
    ),
    row(
        "operation example: another domain",
        (OPERATION_EXAMPLE,),
        request(host="example.org", path="/v1"),
        False,
        NO_ALLOW_MATCHED,
    ),
    row(
        "host with a port in the rule is compared whole",
        (policy("foo/h", rule(to=AuthzOperation(hosts=("httpbin:8000",)))),),
        request(host="httpbin:9000"),
        False,
        NO_ALLOW_MATCHED,
    ),
    row(
        "notHosts",
        (policy("foo/h", rule(to=AuthzOperation(not_hosts=("admin.*",))), action="DENY"),),
        request(host="public.example.com"),
        False,
        "foo/h",
    ),
    row(
        "notMethods and notPorts",
        (policy("foo/m", rule(to=AuthzOperation(not_methods=("DELETE",), not_ports=("15090",)))),),
        request(method="PUT"),
        True,
        "foo/m",
    ),
    row(
        "notRequestPrincipals * denies requests without a token",
        (
            policy(
                "foo/require-token",
                rule(source=AuthzSource(not_request_principals=("*",))),
                action="DENY",
            ),
        ),
        request(),
        False,
        "foo/require-token",
    ),
    row(
        "notNamespaces",
        (policy("foo/ns", rule(source=AuthzSource(not_namespaces=("foo",)))),),
        request(source_principal="cluster.local/ns/foo/sa/x"),
        False,
        NO_ALLOW_MATCHED,
    ),
    # Peer authentication: principals `*` means any authenticated peer.
    row(
        "notPrincipals * denies plaintext",
        (DENY_PLAINTEXT,),
        request(source_principal=""),
        False,
        "istio-system/require-mtls",
    ),
    row("notPrincipals * lets mTLS through", (DENY_PLAINTEXT,), request(), True, ""),
    row(
        "namespaces * refuses plaintext",
        (policy("foo/ns", rule(source=AuthzSource(namespaces=("*",)))),),
        request(source_principal=""),
        False,
        NO_ALLOW_MATCHED,
    ),
    # Ingress IP-based.
    row(
        "ipBlocks: a CIDR",
        (INGRESS_IP,),
        request(source_ip="5.6.7.8"),
        True,
        "istio-system/ingress-policy",
    ),
    row(
        "ipBlocks: a single IP",
        (INGRESS_IP,),
        request(source_ip="1.2.3.4"),
        True,
        "istio-system/ingress-policy",
    ),
    row("ipBlocks: outside", (INGRESS_IP,), request(source_ip="1.2.3.5"), False, NO_ALLOW_MATCHED),
    row(
        "ipBlocks: an IPv4-mapped IPv6 source",
        (INGRESS_IP,),
        request(source_ip="::ffff:5.6.7.8"),
        True,
        "istio-system/ingress-policy",
    ),
    row(
        "ipBlocks: an IPv6 CIDR",
        (policy("foo/v6", rule(source=AuthzSource(ip_blocks=("2001:db8::/32",)))),),
        request(source_ip="2001:db8::7"),
        True,
        "foo/v6",
    ),
    row(
        "host: a bracketed IPv6 authority loses its port",
        (policy("foo/v6", rule(to=AuthzOperation(hosts=("[2001:db8::7]",)))),),
        request(host="[2001:DB8::7]:9080"),
        True,
        "foo/v6",
    ),
    row(
        "remoteIpBlocks read the original client",
        (INGRESS_REMOTE_IP,),
        request(source_ip="10.0.0.1", remote_ip="5.6.7.9"),
        True,
        "istio-system/ingress-policy",
    ),
    row(
        "remoteIpBlocks fall back to the source",
        (INGRESS_REMOTE_IP,),
        request(source_ip="1.2.3.4"),
        True,
        "istio-system/ingress-policy",
    ),
    row(
        "DENY remoteIpBlocks",
        (INGRESS_DENY_REMOTE_IP,),
        request(remote_ip="5.6.7.1"),
        False,
        "istio-system/ingress-policy",
    ),
    row(
        "notRemoteIpBlocks",
        (policy("foo/r", rule(source=AuthzSource(not_remote_ip_blocks=("10.0.0.0/8",)))),),
        request(),
        False,
        NO_ALLOW_MATCHED,
    ),
    # Paths: suffix, presence and URI templates.
    row(
        "suffix path",
        (policy("foo/p", rule(to=AuthzOperation(paths=("*.html",)))),),
        request(path="/docs/index.html"),
        True,
        "foo/p",
    ),
    row(
        "path template {*} is one segment",
        (policy("foo/p", rule(to=AuthzOperation(paths=("/users/{*}/orders",)))),),
        request(path="/users/42/orders"),
        True,
        "foo/p",
    ),
    row(
        "path template {*} does not span segments",
        (policy("foo/p", rule(to=AuthzOperation(paths=("/users/{*}/orders",)))),),
        request(path="/users/4/2/orders"),
        False,
        NO_ALLOW_MATCHED,
    ),
    row(
        "path template {**} spans segments",
        (policy("foo/p", rule(to=AuthzOperation(paths=("/api/{*}/files/{**}",)))),),
        request(path="/api/v1/files/a/b.txt"),
        True,
        "foo/p",
    ),
    # Conditions on connection attributes.
    row(
        "source.ip and destination.port",
        (
            policy(
                "foo/c",
                rule(
                    when=(
                        AuthzCondition("source.ip", values=("10.0.0.0/24",)),
                        AuthzCondition("destination.port", values=("9080",)),
                        AuthzCondition("destination.ip", not_values=("10.0.0.1",)),
                    )
                ),
            ),
        ),
        request(),
        True,
        "foo/c",
    ),
    row(
        "connection.sni, source.namespace and source.principal",
        (
            policy(
                "foo/c",
                rule(
                    when=(
                        AuthzCondition("connection.sni", values=("*.svc.cluster.local",)),
                        AuthzCondition("source.namespace", values=("foo",)),
                        AuthzCondition("source.principal", values=(SLEEP,)),
                        AuthzCondition("source.serviceAccount", values=("foo/sleep",)),
                    )
                ),
            ),
        ),
        request(sni="outbound.productpage.default.svc.cluster.local"),
        True,
        "foo/c",
    ),
    row(
        "request.auth.principal",
        (
            policy(
                "foo/c", rule(when=(AuthzCondition("request.auth.principal", values=("*/bob",)),))
            ),
        ),
        request(request_principal="https://issuer/bob"),
        True,
        "foo/c",
    ),
    row(
        "header value with a prefix",
        (
            policy(
                "foo/c",
                rule(when=(AuthzCondition("request.headers[User-Agent]", values=("curl/*",)),)),
            ),
        ),
        request(headers={"user-agent": "curl/8.5.0"}),
        True,
        "foo/c",
    ),
    # Keys the evaluator cannot read fail closed.
    row(
        "unknown key in ALLOW never matches",
        (
            policy(
                "foo/x", rule(when=(AuthzCondition("experimental.envoy.filters.x", values=("1",)),))
            ),
        ),
        request(),
        False,
        NO_ALLOW_MATCHED,
    ),
    row(
        "unknown key in DENY holds",
        (
            policy(
                "foo/x", rule(when=(AuthzCondition("request.size", values=("1",)),)), action="DENY"
            ),
        ),
        request(),
        False,
        "foo/x",
    ),
]


@pytest.mark.parametrize("case", ROWS, ids=[r.name for r in ROWS])
def test_istio_examples(case: Row) -> None:
    decision = Authorizer(case.policies).check(case.request)
    assert decision == AuthzDecision(case.allowed, case.policy, case.audited)


def test_rows_cover_the_documented_examples() -> None:
    assert len(ROWS) >= 30


def test_what_a_request_must_carry() -> None:
    assert not Authorizer([]).active
    plain = Authorizer([DETAILS_VIEWER])
    assert (plain.active, plain.needs_headers, plain.needs_claims) == (True, False, False)
    assert Authorizer([DENY_GET_UNLESS_ADMIN]).needs_headers
    assert Authorizer([REQUIRE_GROUP1]).needs_claims
    assert not Authorizer([REQUIRE_JWT]).needs_claims


def test_first_matching_deny_decides() -> None:
    second = policy("foo/second", AuthzRule(), action="DENY")
    decision = Authorizer([DENY_ALL, second]).check(request())
    assert decision.policy == "foo/deny-all"


def test_audits_are_listed_in_policy_order() -> None:
    other = policy("ns1/other", AuthzRule(), action="AUDIT")
    decision = Authorizer([AUDIT_PROFILE, other, DENY_ALL]).check(request(path="/user/profile/x"))
    assert decision == AuthzDecision(False, "foo/deny-all", ("ns1/anyname", "ns1/other"))


def test_unparsable_addresses_match_no_block() -> None:
    authorizer = Authorizer([INGRESS_IP])
    assert not authorizer.check(request(source_ip="not-an-ip")).allowed
    assert not authorizer.check(request(source_ip="")).allowed


def test_repr_counts_policies() -> None:
    authorizer = Authorizer([ALLOW_ALL, DENY_GET, AUDIT_PROFILE])
    assert repr(authorizer) == "<Authorizer 1 allow, 1 deny, 1 audit>"
