"""The table of fields Gossamer acts on; `--strict` names the outermost field it does not."""

import pytest
from pydantic import BaseModel

from gossamer.resources import load_text, support
from gossamer.resources.registry import MODELS
from gossamer.resources.schema import fields_of
from gossamer.resources.support import not_enforced

ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    mirror: {host: other}
    corsPolicy: {allowMethods: [GET]}
"""


def paths(monkeypatch: pytest.MonkeyPatch, enforced: set[str]) -> list[str]:
    monkeypatch.setattr(support, "ENFORCED", {"VirtualService": frozenset(enforced)})
    (loaded,) = load_text(ROUTE, "vs.yaml").resources
    return [f"{p.line}:{p.path}" for p in not_enforced(loaded)]


def test_with_nothing_enforced_each_top_level_field_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert paths(monkeypatch, set()) == ["5:spec.hosts", "6:spec.http"]


def test_an_enforced_field_is_entered_and_its_unenforced_children_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    enforced = {
        "spec.hosts",
        "spec.http",
        "spec.http.route",
        "spec.http.route.destination",
        "spec.http.route.destination.host",
    }
    assert paths(monkeypatch, enforced) == ["9:spec.http[0].mirror", "10:spec.http[0].corsPolicy"]


def test_fully_enforced_means_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    enforced = {
        "spec.hosts",
        "spec.http",
        "spec.http.route",
        "spec.http.route.destination",
        "spec.http.route.destination.host",
        "spec.http.mirror",
        "spec.http.mirror.host",
        "spec.http.corsPolicy",
        "spec.http.corsPolicy.allowMethods",
    }
    assert paths(monkeypatch, enforced) == []


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("VirtualService", "spec.http.route.weight"),
        ("VirtualService", "spec.http.match.headers.exact"),
        ("VirtualService", "spec.http.corsPolicy.allowOrigins.regex"),
        ("VirtualService", "spec.http.corsPolicy.unmatchedPreflights"),
        ("DestinationRule", "spec.subsets.trafficPolicy.connectionPool.http.maxRetries"),
        ("Deployment", "spec.template.spec.containers.readinessProbe.periodSeconds"),
        ("Service", "spec.clusterIP"),
        ("Ingress", "spec.rules.http.paths.backend.servicePort"),
        ("WorkloadEntry", "spec.labels"),
        ("AuthorizationPolicy", "spec.rules.to.operation.notPaths"),
        ("PeerAuthentication", "spec.portLevelMtls.mode"),
        ("RequestAuthentication", "spec.jwtRules.fromHeaders.prefix"),
        ("ApiProduct", "spec.gateways"),
        ("ApiProduct", "spec.consumers.keys.fromFile"),
    ],
)
def test_what_the_runtime_acts_on_is_enforced(kind: str, pattern: str) -> None:
    assert support.is_enforced(kind, pattern)


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("AuthorizationPolicy", "spec.provider"),
        ("AuthorizationPolicy", "spec.targetRef"),
        ("RequestAuthentication", "spec.jwtRules.spaceDelimitedClaims"),
        ("Topic", "spec.partitions"),
        ("VirtualService", "spec.http.sessionPersistence"),
        ("VirtualService", "spec.tls.match.sourceLabels"),
        ("VirtualService", "spec.tcp.match.destinationSubnets"),
        ("DestinationRule", "spec.trafficPolicy.tls"),
        ("DestinationRule", "spec.trafficPolicy.outlierDetection.interval"),
        ("Deployment", "spec.template.spec.containers.image"),
        ("Deployment", "spec.template.spec.containers.readinessProbe.httpGet.port"),
        ("Ingress", "spec.ingressClassName"),
        ("WorkloadEntry", "spec.locality"),
    ],
)
def test_what_nothing_acts_on_yet_is_not_enforced(kind: str, pattern: str) -> None:
    assert not support.is_enforced(kind, pattern)


def _resolves(model: type[BaseModel] | None, pattern: str) -> bool:
    for name in pattern.split("."):
        shape = fields_of(model).get(name) if model is not None else None
        if shape is None:
            return False
        model = shape.model
    return True


@pytest.mark.parametrize("kind", sorted(support.ENFORCED))
def test_each_enforced_field_exists_and_so_does_every_field_above_it(kind: str) -> None:
    models = [model for model in MODELS if kind == support.support_key(model)]
    for pattern in support.ENFORCED[kind]:
        assert any(_resolves(model, pattern) for model in models), f"{kind} has no {pattern}"
        parent = pattern.rpartition(".")[0]
        # Otherwise --strict would name the parent and never reach the field.
        assert not parent or support.is_enforced(kind, parent), f"{kind}: {parent} missing"


def test_a_route_using_only_enforced_fields_is_silent_under_strict() -> None:
    (loaded,) = load_text(ROUTE, "vs.yaml").resources
    assert list(not_enforced(loaded)) == []


def test_every_field_of_a_cors_policy_is_enforced() -> None:
    text = ROUTE.replace(
        "    corsPolicy: {allowMethods: [GET]}\n",
        """\
    corsPolicy:
      allowOrigins: [{exact: "https://a.example"}, {prefix: "https://b"}, {regex: ".*"}]
      allowOrigin: ["*"]
      allowMethods: [GET]
      allowHeaders: [x-a]
      exposeHeaders: [x-b]
      maxAge: 24h
      allowCredentials: true
      unmatchedPreflights: IGNORE
""",
    )
    (loaded,) = load_text(text, "vs.yaml").resources
    assert loaded.resource.spec.http[0].cors_policy.unmatched_preflights == "IGNORE"
    assert list(not_enforced(loaded)) == []
