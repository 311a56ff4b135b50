"""The examples of the official reference pages load, every document of them, with no error.

reference_examples/ holds one file per kind, written from the examples that the Istio and
Kubernetes reference pages show; each file says where its examples come from and marks what had
to change. The counts below fail the test when a document silently stops loading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gossamer.resources.base import Resource
from gossamer.resources.loader import LoadResult, load_paths, load_text
from gossamer.resources.problems import Severity

EXAMPLES = Path(__file__).resolve().parent / "reference_examples"

# file -> (the kind every document has, how many documents it holds)
EXPECTED: dict[str, tuple[str, int]] = {
    "virtualservice.yaml": ("VirtualService", 28),
    "destinationrule.yaml": ("DestinationRule", 17),
    "gateway.yaml": ("Gateway", 6),
    "serviceentry.yaml": ("ServiceEntry", 10),
    "workloadentry.yaml": ("WorkloadEntry", 5),
    "peerauthentication.yaml": ("PeerAuthentication", 5),
    "authorizationpolicy.yaml": ("AuthorizationPolicy", 17),
    "requestauthentication.yaml": ("RequestAuthentication", 5),
    "service.yaml": ("Service", 13),
    "deployment.yaml": ("Deployment", 4),
    "ingress.yaml": ("Ingress", 8),
    "ingress-v1beta1.yaml": ("Ingress", 10),
}


def _load(name: str) -> LoadResult:
    return load_paths([EXAMPLES / name])


def _errors(result: LoadResult) -> list[str]:
    return [str(p) for p in result.problems if p.severity is Severity.ERROR]


def _spec(name: str, index: int) -> Any:
    """The typed spec of the index-th document of a file (all of them load, as tested below)."""
    resource: Resource = _load(name).resources[index].resource
    return resource.spec  # type: ignore[attr-defined]


def test_every_example_file_is_counted() -> None:
    assert {path.name for path in EXAMPLES.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reference_examples_load_without_errors(name: str) -> None:
    result = _load(name)
    assert _errors(result) == []
    kind, count = EXPECTED[name]
    assert len(result.resources) == count
    assert {loaded.kind for loaded in result.resources} == {kind}


def test_virtual_service_values_are_typed() -> None:
    headers = _spec("virtualservice.yaml", 7).http[0]
    assert [target.weight for target in headers.route] == [25, 75]
    assert headers.headers.request.set == {"test": "true"}
    assert headers.route[1].headers.response.remove == ["foo"]
    delegate = _spec("virtualservice.yaml", 4).http[0].delegate
    assert (delegate.name, delegate.namespace) == ("productpage", "nsa")
    assert _spec("virtualservice.yaml", 5).http[0].match[0].uri.prefix == "/productpage/v1/"
    assert _spec("virtualservice.yaml", 9).tcp[0].route[0].destination.port.number == 5555
    assert _spec("virtualservice.yaml", 14).http[0].redirect.prefix_rewrite == "/"
    assert _spec("virtualservice.yaml", 16).http[0].direct_response.body.bytes == (
        "dW5rbm93biBlcnJvcg=="
    )
    retries = _spec("virtualservice.yaml", 19).http[0].retries
    assert (retries.attempts, retries.per_try_timeout) == (3, "2s")
    cors = _spec("virtualservice.yaml", 20).http[0].cors_policy
    assert cors.allow_origins[0].exact == "https://example.com"
    assert cors.allow_credentials is False
    assert _spec("virtualservice.yaml", 21).http[0].fault.delay.percentage.value == 0.1
    assert _spec("virtualservice.yaml", 22).http[0].fault.abort.http_status == 400
    claims = _spec("virtualservice.yaml", 27).http[0].match[0].headers
    assert claims["@request.auth.claims.sub"].exact == "dev"


def test_destination_rule_values_are_typed() -> None:
    assert _spec("destinationrule.yaml", 0).traffic_policy.load_balancer.simple == "LEAST_REQUEST"
    subset = _spec("destinationrule.yaml", 1).subsets[0]
    assert subset.labels == {"version": "v3"}
    assert subset.traffic_policy.load_balancer.simple == "ROUND_ROBIN"
    cookie = _spec("destinationrule.yaml", 5).traffic_policy.load_balancer.consistent_hash
    assert (cookie.http_cookie.name, cookie.http_cookie.ttl) == ("user", "0s")
    policy = _spec("destinationrule.yaml", 7).traffic_policy
    assert policy.connection_pool.http.http2_max_requests == 1000
    assert policy.outlier_detection.consecutive5xx_errors == 7
    assert policy.outlier_detection.base_ejection_time == "15m"
    distribute = _spec("destinationrule.yaml", 11).traffic_policy.load_balancer
    assert distribute.locality_lb_setting.distribute[0].to == {
        "us-west/zone1/*": 80,
        "us-west/zone2/*": 20,
    }
    assert _spec("destinationrule.yaml", 3).workload_selector.match_labels == {"app": "ratings"}


def test_gateway_and_service_entry_values_are_typed() -> None:
    servers = _spec("gateway.yaml", 0).servers
    assert servers[0].tls.https_redirect is True
    assert (servers[2].tls.mode, servers[2].tls.credential_name) == ("SIMPLE", "bookinfo-secret")
    assert servers[4].port.protocol == "MONGO"
    assert _spec("gateway.yaml", 5).selector == {"istio": "egressgateway"}
    dns = _spec("serviceentry.yaml", 6)
    assert dns.resolution == "DNS"
    assert dns.endpoints[0].ports == {"http": 8080}
    assert _spec("serviceentry.yaml", 8).workload_selector.labels == {"app": "details"}
    assert _spec("serviceentry.yaml", 1).addresses == ["192.192.192.192/24"]


def test_workload_entry_values_are_typed() -> None:
    entries = _load("workloadentry.yaml").resources
    assert [e.resource.api_version for e in entries[:3]] == [
        "networking.istio.io/v1",
        "networking.istio.io/v1beta1",
        "networking.istio.io/v1alpha3",
    ]
    vm = _spec("workloadentry.yaml", 0)
    assert (vm.address, vm.service_account) == ("2.2.2.2", "details-legacy")
    assert vm.labels == {"app": "details-legacy", "instance-id": "vm1"}
    assert _spec("workloadentry.yaml", 1).address == "vm1.vpc01.corp.net"
    remote = _spec("workloadentry.yaml", 2)
    assert (remote.address, remote.network) == (None, "cluster-2-network")
    # The remote entry is reachable only through its network's gateway: a warning says so.
    assert [(p.path, p.severity) for p in _load("workloadentry.yaml").problems] == [
        ("spec.address", Severity.WARNING)
    ]


def test_security_values_are_typed() -> None:
    assert _spec("peerauthentication.yaml", 3).port_level_mtls[8080].mode == "DISABLE"
    allow = _spec("authorizationpolicy.yaml", 0)
    assert allow.action == "ALLOW"
    assert allow.rules[0].from_[0].source.principals == ["cluster.local/ns/default/sa/sleep"]
    assert allow.rules[0].when[0].key == "request.auth.claims[iss]"
    assert _spec("authorizationpolicy.yaml", 9).target_refs[0].group == (
        "gateway.networking.k8s.io"
    )
    assert _spec("authorizationpolicy.yaml", 10).provider.name == "my-custom-authz"
    assert _spec("requestauthentication.yaml", 0).jwt_rules[0].jwks_uri == (
        "https://example.com/.well-known/jwks.json"
    )
    fragments = _spec("requestauthentication.yaml", 4).jwt_rules
    assert fragments[2].from_headers[0].prefix == "Bearer "
    assert fragments[2].output_claim_to_headers[2].claim == "nested.key.group"


def test_kubernetes_values_are_typed() -> None:
    assert _spec("service.yaml", 1).ports[0].target_port == "http-web-svc"
    node_port = _spec("service.yaml", 4)
    assert (node_port.type, node_port.ports[0].node_port) == ("NodePort", 30007)
    assert _load("service.yaml").resources[5].resource.status is not None
    assert _spec("service.yaml", 6).external_name == "my.database.example.com"
    assert _spec("service.yaml", 10).ip_families == ["IPv6", "IPv4"]
    deployment = _spec("deployment.yaml", 0)
    assert deployment.replicas == 3
    assert deployment.template.spec.containers[0].ports[0].container_port == 80
    minimal = _spec("ingress.yaml", 0)
    assert minimal.ingress_class_name == "nginx-example"
    assert minimal.rules[0].http.paths[0].backend.service.port.number == 80
    assert _spec("ingress.yaml", 1).default_backend.resource.kind == "StorageBucket"
    old = _load("ingress-v1beta1.yaml").resources
    assert old[0].resource.api_version == "extensions/v1beta1"
    assert old[5].resource.api_version == "networking.k8s.io/v1beta1"
    assert _spec("ingress-v1beta1.yaml", 1).backend.service_port == 80


# Fields of the current references that no example on the pages shows, one document each.
NEWER_FIELDS = {
    "VirtualService sessionPersistence and prefixRewrite": """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: sticky}
spec:
  hosts: [reviews]
  http:
  - sessionPersistence:
      type: COOKIE
      absoluteTimeout: 1h
      cookie: {name: session, path: /, lifetimeType: PERMANENT}
    route:
    - {destination: {host: reviews, subset: v1}, weight: 75}
    - {destination: {host: reviews, subset: v2}, weight: 25}
  - match: [{uri: {prefix: /old/}}]
    redirect: {prefixRewrite: /new/, derivePort: FROM_REQUEST_PORT}
""",
    "DestinationRule retryBudget, warmup, cookie attributes": """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: budget}
spec:
  host: reviews
  trafficPolicy:
    retryBudget: {percent: 20, minRetryConcurrency: 3}
    loadBalancer:
      consistentHash:
        httpCookie:
          name: user
          ttl: 10s
          attributes: [{name: SameSite, value: Strict}, {name: HttpOnly}]
  subsets:
  - name: v1
    trafficPolicy:
      loadBalancer:
        simple: LEAST_REQUEST
        warmup: {duration: 60s, minimumPercent: 10, aggression: 1.5}
""",
    "Gateway caCertCredentialName, credentialNames, tlsCertificates": """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mtls}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls:
      mode: OPTIONAL_MUTUAL
      credentialNames: [rsa-cert, ecdsa-cert]
      caCertCredentialName: client-ca
  - port: {number: 8443, name: https-files, protocol: HTTPS}
    hosts: ["*"]
    tls:
      mode: SIMPLE
      tlsCertificates:
      - {serverCertificate: /etc/certs/rsa.pem, privateKey: /etc/certs/rsa-key.pem}
""",
    "ServiceEntry DYNAMIC_DNS": """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wildcard}
spec:
  hosts: ["*.example.com"]
  location: MESH_EXTERNAL
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DYNAMIC_DNS
""",
    "RequestAuthentication spaceDelimitedClaims and the jwks_uri spelling": """
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: scopes}
spec:
  jwtRules:
  - issuer: https://example.com
    jwks_uri: https://example.com/.well-known/jwks.json
    spaceDelimitedClaims: [scope, permissions]
    timeout: 5s
""",
    "Deployment container restartPolicy, scheduling and eviction fields": """
apiVersion: apps/v1
kind: Deployment
metadata: {name: worker}
spec:
  selector: {matchLabels: {app: worker}}
  template:
    metadata: {labels: {app: worker}}
    spec:
      schedulingGroup: {podGroupName: training-worker-0}
      workloadRef: {name: training-job-workload, podGroup: workers}
      evictionResponders: [{name: example.com/drainer, priority: 10000}]
      initContainers:
      - {name: proxy, command: [proxy], restartPolicy: Always}
      containers:
      - name: worker
        command: [worker]
        restartPolicy: Never
        restartPolicyRules: [{action: Restart, exitCodes: {operator: In, values: [42]}}]
""",
}


@pytest.mark.parametrize("title", sorted(NEWER_FIELDS))
def test_newer_reference_fields_load(title: str) -> None:
    result = load_text(NEWER_FIELDS[title], "newer.yaml")
    assert _errors(result) == []
    assert len(result.resources) == 1


def test_newer_fields_are_typed() -> None:
    def spec(title: str) -> Any:
        resource: Resource = load_text(NEWER_FIELDS[title], "newer.yaml").resources[0].resource
        return resource.spec  # type: ignore[attr-defined]

    sticky = spec("VirtualService sessionPersistence and prefixRewrite")
    assert sticky.http[0].session_persistence.cookie.lifetime_type == "PERMANENT"
    assert sticky.http[1].redirect.prefix_rewrite == "/new/"
    budget = spec("DestinationRule retryBudget, warmup, cookie attributes").traffic_policy
    assert budget.retry_budget.percent == 20
    assert budget.load_balancer.consistent_hash.http_cookie.attributes[1].value is None
    tls = spec("Gateway caCertCredentialName, credentialNames, tlsCertificates").servers[0].tls
    assert tls.ca_cert_credential_name == "client-ca"
    rule = spec("RequestAuthentication spaceDelimitedClaims and the jwks_uri spelling").jwt_rules[0]
    assert rule.jwks_uri == "https://example.com/.well-known/jwks.json"
    assert rule.space_delimited_claims == ["scope", "permissions"]
    pod = spec("Deployment container restartPolicy, scheduling and eviction fields").template.spec
    assert pod.containers[0].restart_policy == "Never"
    assert pod.scheduling_group == {"podGroupName": "training-worker-0"}


def test_a_delegate_virtual_service_takes_no_gateways() -> None:
    text = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  gateways: [mygateway]
  http:
  - route: [{destination: {host: reviews}}]
"""
    assert [p.path for p in load_text(text, "delegate.yaml").problems] == ["spec.gateways"]


def test_jwks_uri_is_given_once() -> None:
    text = """
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: twice}
spec:
  jwtRules:
  - issuer: https://example.com
    jwksUri: https://example.com/a.json
    jwks_uri: https://example.com/b.json
"""
    problems = load_text(text, "twice.yaml").problems
    assert [(p.path, p.code) for p in problems] == [
        ("spec.jwtRules[0].jwks_uri", "extra_forbidden")
    ]
