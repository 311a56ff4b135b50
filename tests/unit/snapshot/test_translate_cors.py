"""A VirtualService rule's corsPolicy becomes its route's `cors`, read as Istio reads it."""

import pytest

from gossamer.resources import Resource, load_text
from gossamer.snapshot import (
    Cluster,
    Cors,
    Listener,
    Route,
    RouteTable,
    Snapshot,
    StringMatch,
    VirtualHost,
    WeightedCluster,
)
from gossamer.snapshot.codec import SnapshotError, check, decode, dump
from gossamer.snapshot.translate import SidecarSpec, sidecar_snapshot

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports: [{name: http, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api]
  http:
"""


def resources(text: str) -> list[Resource]:
    result = load_text(text, "test.yaml")
    assert [p for p in result.problems if p.severity.name == "ERROR"] == []
    return [loaded.resource for loaded in result.resources]


def api_routes(rules: str) -> tuple[Route, ...]:
    snapshot = sidecar_snapshot(
        resources(SERVICE + rules), {}, SidecarSpec("web", "default", "web"), "v1"
    )
    check(snapshot)
    (table,) = [t for t in snapshot.route_tables if t.name == "outbound"]
    (host,) = [h for h in table.virtual_hosts if h.name == "api.default.svc.cluster.local:8080"]
    # The round trip a proxy makes when the control plane sends it the snapshot.
    assert decode(dump(snapshot)) == snapshot
    return host.routes


def test_every_field_of_a_cors_policy_reaches_the_route() -> None:
    (route,) = api_routes("""\
  - route: [{destination: {host: api}}]
    corsPolicy:
      allowOrigins:
      - exact: https://shop.example.com
      - prefix: https://dev-
      - regex: "https://.*\\\\.example\\\\.org"
      allowMethods: [GET, POST]
      allowHeaders: [X-Custom, Authorization]
      exposeHeaders: [X-Request-Id]
      maxAge: 24h
      allowCredentials: true
      unmatchedPreflights: IGNORE
""")
    assert route.cors == Cors(
        allow_origins=(
            StringMatch(kind="exact", value="https://shop.example.com"),
            StringMatch(kind="prefix", value="https://dev-"),
            StringMatch(kind="regex", value="https://.*\\.example\\.org"),
        ),
        allow_methods=("GET", "POST"),
        allow_headers=("X-Custom", "Authorization"),
        expose_headers=("X-Request-Id",),
        max_age=86400,
        allow_credentials=True,
        unmatched_preflights="IGNORE",
    )


def test_the_deprecated_allow_origin_is_exact_and_istio_forwards_unmatched_preflights() -> None:
    (route,) = api_routes("""\
  - route: [{destination: {host: api}}]
    corsPolicy:
      allowOrigin: ["*", https://a.example]
      maxAge: 1.9s
      unmatchedPreflights: UNSPECIFIED
""")
    assert route.cors == Cors(
        allow_origins=(
            StringMatch(kind="exact", value="*"),
            StringMatch(kind="exact", value="https://a.example"),
        ),
        max_age=1,
    )
    assert route.cors.unmatched_preflights == "FORWARD"


def test_allow_origins_wins_over_the_deprecated_list() -> None:
    (route,) = api_routes("""\
  - route: [{destination: {host: api}}]
    corsPolicy:
      allowOrigins: [{exact: https://new.example}]
      allowOrigin: [https://old.example]
""")
    assert route.cors is not None
    assert route.cors.allow_origins == (StringMatch(kind="exact", value="https://new.example"),)


def test_rules_without_a_policy_and_rules_that_do_not_forward_carry_none() -> None:
    routes = api_routes("""\
  - match: [{uri: {exact: /moved}}]
    redirect: {uri: /here}
    corsPolicy: {allowOrigins: [{exact: https://a.example}]}
  - match: [{uri: {exact: /plain}}]
    route: [{destination: {host: api}}]
""")
    # Envoy's CORS filter leaves redirects and direct responses alone.
    assert [route.cors for route in routes] == [None, None]


def test_a_snapshot_with_a_bad_origin_regex_is_refused() -> None:
    cors = Cors(allow_origins=(StringMatch(kind="regex", value="("),))
    route = Route(name="r", clusters=(WeightedCluster(cluster="c"),), cors=cors)
    snapshot = Snapshot(
        version="1",
        listeners=(
            Listener(name="l", address="127.0.0.1", port=0, role="outbound", route_table="t"),
        ),
        route_tables=(RouteTable(name="t", virtual_hosts=(VirtualHost("h", ("*",), (route,)),)),),
        clusters=(Cluster(name="c"),),
    )
    with pytest.raises(SnapshotError, match="bad regex"):
        check(snapshot)
