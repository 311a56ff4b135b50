"""DestinationRules and Services as clusters: subsets, merged policies, endpoints, metric labels."""

import pytest

from gossamer.resources import Resource, load_text
from gossamer.snapshot import (
    Cluster,
    Endpoint,
    HashPolicy,
    OutlierDetection,
    PoolLimits,
    RetryBudget,
    ServiceLabels,
    Snapshot,
)
from gossamer.snapshot.codec import check
from gossamer.snapshot.durations import seconds
from gossamer.snapshot.translate import EndpointIndex, SidecarSpec, sidecar_snapshot
from gossamer.snapshot.translate_clusters import ISTIO_MAX_RETRIES

# What a cluster gets when nothing sets its pool: Envoy's defaults, but Istio's unbounded retries.
ISTIO_LIMITS = PoolLimits(max_retries=ISTIO_MAX_RETRIES)

RATINGS = "ratings.prod.svc.cluster.local"

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: prod}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}, {name: http-admin, port: 9090}, {name: tcp-db, port: 5432}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ratings-v1, namespace: prod}
spec:
  selector: {matchLabels: {app: ratings, version: v1}}
  template:
    metadata: {labels: {app: ratings, version: v1}}
    spec: {containers: [{name: ratings, command: [run]}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ratings-v2, namespace: prod}
spec:
  selector: {matchLabels: {app: ratings, version: v2}}
  template:
    metadata: {labels: {app: ratings, version: v2}}
    spec: {containers: [{name: ratings, command: [run]}]}
"""

CALLER = SidecarSpec("productpage-v1", "default", "bookinfo-productpage")


def resources(text: str) -> list[Resource]:
    result = load_text(text, "test.yaml")
    assert [p for p in result.problems if p.severity.name == "ERROR"] == []
    return [loaded.resource for loaded in result.resources]


def endpoints() -> EndpointIndex:
    pods = [
        Endpoint(f"10.1.0.{n}", port, labels=(("app", "ratings"), ("version", f"v{n}")))
        for n in (1, 2)
        for port in (9080,)
    ]
    return {(RATINGS, 9080): pods, (RATINGS, 9090): [Endpoint("10.1.0.1", 9090)]}


def snapshot_of(rules: str) -> Snapshot:
    snapshot = sidecar_snapshot(resources(SERVICES + "---\n" + rules), endpoints(), CALLER, "1")
    check(snapshot)
    return snapshot


def clusters_of(rules: str) -> dict[str, Cluster]:
    return {cluster.name: cluster for cluster in snapshot_of(rules).clusters}


def test_one_cluster_per_served_port_and_subset_with_its_endpoints_and_metric_labels() -> None:
    clusters = clusters_of("""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: prod}
spec:
  host: ratings
  subsets: [{name: v2, labels: {version: v2}}]
""")
    assert sorted(name for name in clusters if RATINGS in name) == [
        f"outbound|5432|v2|{RATINGS}",
        f"outbound|5432||{RATINGS}",
        f"outbound|9080|v2|{RATINGS}",
        f"outbound|9080||{RATINGS}",
        f"outbound|9090|v2|{RATINGS}",
        f"outbound|9090||{RATINGS}",
    ]
    subset = clusters[f"outbound|9080|v2|{RATINGS}"]
    assert [e.address for e in subset.endpoints] == ["10.1.0.2"]
    assert subset.labels == ServiceLabels(
        service=RATINGS,
        service_name="ratings",
        namespace="prod",
        workload="ratings-v2",
        version="v2",
    )
    # Two Deployments stand behind the whole Service: its workload and version are not one.
    assert clusters[f"outbound|9080||{RATINGS}"].labels == ServiceLabels(
        service=RATINGS, service_name="ratings", namespace="prod"
    )


def test_a_subset_policy_overrides_the_rule_field_by_field() -> None:
    clusters = clusters_of("""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: prod}
spec:
  host: ratings.prod.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 30ms, idleTimeout: 10m}
      http: {http1MaxPendingRequests: 10, http2MaxRequests: 1000, maxRequestsPerConnection: 10,
             maxRetries: 5, idleTimeout: 1m30s}
    outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {simple: LEAST_CONN}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      connectionPool: {http: {http2MaxRequests: 50}}
      outlierDetection: {consecutiveGatewayErrors: 2, maxEjectionPercent: 50}
""")
    top = clusters[f"outbound|9080||{RATINGS}"]
    limits = PoolLimits(
        max_connections=100,
        max_pending=10,
        max_requests=1000,
        max_requests_per_connection=10,
        max_retries=5,
        connect_timeout=0.03,
        idle_timeout=90.0,
        tcp_idle_timeout=600.0,
    )
    outlier = OutlierDetection(consecutive_5xx=7, interval=300.0, base_ejection_time=900.0)
    assert (top.lb_policy, top.limits, top.outlier_detection) == ("ROUND_ROBIN", limits, outlier)
    v1 = clusters[f"outbound|9080|v1|{RATINGS}"]
    assert (v1.lb_policy, v1.limits, v1.outlier_detection) == ("LEAST_REQUEST", limits, outlier)
    v2 = clusters[f"outbound|9080|v2|{RATINGS}"]
    assert (v2.lb_policy, v2.limits, v2.outlier_detection) == (
        "ROUND_ROBIN",
        PoolLimits(max_requests=50, max_retries=ISTIO_MAX_RETRIES),
        OutlierDetection(consecutive_gateway_errors=2, max_ejection_percent=50),
    )


def test_port_level_settings_replace_the_policy_of_their_port_wholesale() -> None:
    clusters = clusters_of("""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: prod}
spec:
  host: ratings.prod.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
    connectionPool: {tcp: {maxConnections: 7}}
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer: {simple: ROUND_ROBIN}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      portLevelSettings:
      - port: {number: 9080}
        outlierDetection: {consecutive5xxErrors: 1}
""")
    assert clusters[f"outbound|9080||{RATINGS}"].lb_policy == "RANDOM"
    admin = clusters[f"outbound|9090||{RATINGS}"]
    assert (admin.lb_policy, admin.limits) == ("ROUND_ROBIN", ISTIO_LIMITS)
    # The subset's port-level entry takes every field of port 9080: defaults where it says nothing.
    v1 = clusters[f"outbound|9080|v1|{RATINGS}"]
    assert (v1.lb_policy, v1.limits, v1.outlier_detection) == (
        "LEAST_REQUEST",
        ISTIO_LIMITS,
        OutlierDetection(consecutive_5xx=1),
    )
    v1_admin = clusters[f"outbound|9090|v1|{RATINGS}"]
    assert (v1_admin.lb_policy, v1_admin.limits) == ("ROUND_ROBIN", ISTIO_LIMITS)


@pytest.mark.parametrize(
    ("hashing", "expected"),
    [
        ("{httpHeaderName: X-User}", HashPolicy(header="x-user")),
        ("{httpCookie: {name: session, ttl: 0s}}", HashPolicy(cookie="session")),
        ("{useSourceIp: true}", HashPolicy(source_ip=True)),
        ("{httpQueryParameterName: user}", HashPolicy(query_param="user")),
    ],
)
def test_consistent_hashing_becomes_a_ring_hash_on_its_key(
    hashing: str, expected: HashPolicy
) -> None:
    clusters = clusters_of(f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ratings, namespace: prod}}
spec:
  host: ratings.prod.svc.cluster.local
  trafficPolicy:
    loadBalancer: {{consistentHash: {hashing}}}
    retryBudget: {{percent: 10, minRetryConcurrency: 1}}
""")
    cluster = clusters[f"outbound|9080||{RATINGS}"]
    assert (cluster.lb_policy, cluster.hash_policy) == ("RING_HASH", expected)
    assert cluster.retry_budget == RetryBudget(percent=10.0, min_concurrency=1)


def test_the_rule_of_the_callers_namespace_wins_over_the_services_and_the_roots() -> None:
    rule = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ratings, namespace: {namespace}}}
spec:
  host: "{host}"
  trafficPolicy: {{loadBalancer: {{simple: {simple}}}}}
"""
    rules = [
        rule.format(namespace="istio-system", host=RATINGS, simple="RANDOM"),
        rule.format(namespace="prod", host="ratings", simple="ROUND_ROBIN"),
        rule.format(namespace="default", host="*.prod.svc.cluster.local", simple="PEAK_EWMA"),
    ]
    assert clusters_of("---\n".join(rules))[f"outbound|9080||{RATINGS}"].lb_policy == "PEAK_EWMA"
    assert clusters_of("---\n".join(rules[:2]))[f"outbound|9080||{RATINGS}"].lb_policy == (
        "ROUND_ROBIN"
    )
    assert clusters_of(rules[0])[f"outbound|9080||{RATINGS}"].lb_policy == "RANDOM"


def test_a_rule_with_a_workload_selector_applies_to_the_selected_callers_only() -> None:
    clusters = clusters_of("""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-for-reviews, namespace: default}
spec:
  host: ratings.prod.svc.cluster.local
  workloadSelector: {matchLabels: {app: reviews}}
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
""")
    assert clusters[f"outbound|9080||{RATINGS}"].lb_policy == "LEAST_REQUEST"


def test_opaque_ports_have_a_cluster_too_and_endpoints_come_sorted() -> None:
    index = {
        (RATINGS, 9080): [Endpoint("10.1.0.9", 9080), Endpoint("10.1.0.10", 9080)],
        (RATINGS, 5432): [Endpoint("10.1.0.9", 15432)],
    }
    snapshot = sidecar_snapshot(resources(SERVICES), index, CALLER, "1")
    check(snapshot)
    clusters = {cluster.name: cluster for cluster in snapshot.clusters}
    assert [e.port for e in clusters[f"outbound|5432||{RATINGS}"].endpoints] == [15432]
    assert [e.address for e in clusters[f"outbound|9080||{RATINGS}"].endpoints] == [
        "10.1.0.10",
        "10.1.0.9",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.5s", 1.5), ("100ms", 0.1), ("2m", 120.0), ("1h30m", 5400.0), ("250us", 0.00025)],
)
def test_durations_are_read_as_seconds(text: str, expected: float) -> None:
    assert seconds(text) == expected


def test_a_duration_must_be_one() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        seconds("10")
