"""VirtualServices in the outbound route table of a sidecar: what a caller's request meets."""

from gossamer.resources import Resource, load_text
from gossamer.snapshot import (
    DirectResponse,
    Endpoint,
    Fault,
    HeaderMatch,
    HeaderOps,
    Mirror,
    QueryMatch,
    Redirect,
    RetryPolicy,
    Rewrite,
    Route,
    RouteMatch,
    Snapshot,
    StringMatch,
    VirtualHost,
    WeightedCluster,
)
from gossamer.snapshot.codec import check
from gossamer.snapshot.translate import EndpointIndex, SidecarSpec, sidecar_snapshot

REVIEWS = "reviews.default.svc.cluster.local"
ISTIO_DEFAULT_RETRY = RetryPolicy(
    attempts=2,
    retry_on=(
        "connect-failure",
        "refused-stream",
        "unavailable",
        "cancelled",
        "retriable-status-codes",
    ),
    retriable_status_codes=(503,),
)

# Bookinfo, trimmed: productpage calls reviews, which runs in three versions.
BOOKINFO = """\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: productpage}
spec:
  selector: {app: productpage}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: prod}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}, {name: http-admin, port: 9090}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: productpage-v1}
spec:
  selector: {matchLabels: {app: productpage, version: v1}}
  template:
    metadata: {labels: {app: productpage, version: v1}}
    spec:
      containers: [{name: productpage, command: [run], ports: [{containerPort: 9080}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
"""

PRODUCTPAGE = SidecarSpec("productpage-v1", "default", "bookinfo-productpage")


def resources(text: str) -> list[Resource]:
    result = load_text(text, "test.yaml")
    assert [p for p in result.problems if p.severity.name == "ERROR"] == []
    return [loaded.resource for loaded in result.resources]


def reviews_endpoints() -> EndpointIndex:
    return {
        (REVIEWS, 9080): [
            Endpoint(f"10.0.0.{n}", 9080, labels=(("app", "reviews"), ("version", f"v{n}")))
            for n in (3, 1, 2)
        ]
    }


def sidecar(virtual_services: str, endpoints: EndpointIndex | None = None) -> Snapshot:
    snapshot = sidecar_snapshot(
        resources(BOOKINFO + "---\n" + virtual_services),
        endpoints or reviews_endpoints(),
        PRODUCTPAGE,
        "v1",
    )
    check(snapshot)
    return snapshot


def host(snapshot: Snapshot, name: str) -> VirtualHost:
    (table,) = [t for t in snapshot.route_tables if t.name == "outbound"]
    (found,) = [h for h in table.virtual_hosts if h.name == name]
    return found


def reviews_routes(virtual_service: str) -> tuple[Route, ...]:
    return host(sidecar(virtual_service), f"{REVIEWS}:9080").routes


def test_the_reviews_canary_splits_90_10_over_the_subsets_of_the_destination_rule() -> None:
    snapshot = sidecar("""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
""")
    (route,) = host(snapshot, f"{REVIEWS}:9080").routes
    assert route.clusters == (
        WeightedCluster(f"outbound|9080|v1|{REVIEWS}", weight=90),
        WeightedCluster(f"outbound|9080|v2|{REVIEWS}", weight=10),
    )
    clusters = {c.name: c for c in snapshot.clusters}
    assert [e.address for e in clusters[f"outbound|9080|v1|{REVIEWS}"].endpoints] == ["10.0.0.1"]
    assert [e.address for e in clusters[f"outbound|9080|v2|{REVIEWS}"].endpoints] == ["10.0.0.2"]
    assert [e.address for e in clusters[f"outbound|9080||{REVIEWS}"].endpoints] == [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
    ]


def test_a_service_is_reachable_by_every_name_kubernetes_dns_search_gives_it() -> None:
    snapshot = sidecar("")
    assert host(snapshot, f"{REVIEWS}:9080").domains == (
        "reviews",
        "reviews:9080",
        "reviews.default",
        "reviews.default:9080",
        "reviews.default.svc",
        "reviews.default.svc:9080",
        REVIEWS,
        f"{REVIEWS}:9080",
    )
    # Another namespace's Service has no short name; a Host without a port means its first port.
    assert host(snapshot, "ratings.prod.svc.cluster.local:9080").domains[:2] == (
        "ratings.prod",
        "ratings.prod:9080",
    )
    assert host(snapshot, "ratings.prod.svc.cluster.local:9090").domains == (
        "ratings.prod:9090",
        "ratings.prod.svc:9090",
        "ratings.prod.svc.cluster.local:9090",
    )


def test_header_routes_come_first_and_the_first_match_wins() -> None:
    routes = reviews_routes("""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match:
    - headers: {end-user: {exact: jason}}
    route: [{destination: {host: reviews, subset: v2}}]
  - name: testers
    match:
    - headers: {x-group: {prefix: test}}
    - queryParams: {tester: {exact: "yes"}}
    route: [{destination: {host: reviews, subset: v3}}]
  - route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: v3}}]
""")
    assert [(r.name, r.match, r.clusters[0].cluster) for r in routes] == [
        (
            "default/reviews/jason",
            RouteMatch(headers=(HeaderMatch("end-user", StringMatch("exact", "jason")),)),
            f"outbound|9080|v2|{REVIEWS}",
        ),
        (
            "default/reviews/testers/0",
            RouteMatch(headers=(HeaderMatch("x-group", StringMatch("prefix", "test")),)),
            f"outbound|9080|v3|{REVIEWS}",
        ),
        (
            "default/reviews/testers/1",
            RouteMatch(query=(QueryMatch("tester", StringMatch("exact", "yes")),)),
            f"outbound|9080|v3|{REVIEWS}",
        ),
        # The rule without a match takes everything; nothing after it could ever be reached,
        # and no default route is added behind it.
        ("default/reviews/2", RouteMatch(), f"outbound|9080|v1|{REVIEWS}"),
    ]


def test_a_request_no_rule_matches_finds_no_route_as_in_istio() -> None:
    routes = reviews_routes("""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: reviews}}]
""")
    assert [r.match.path for r in routes] == [StringMatch("prefix", "/api")]


def test_every_kind_of_match_condition_is_carried_over() -> None:
    (route,) = reviews_routes("""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {regex: "/reviews/[0-9]+"}
      ignoreUriCase: true
      method: {exact: GET}
      authority: {prefix: reviews}
      scheme: {exact: http}
      headers: {X-Canary: {}}
      withoutHeaders: {x-debug: {exact: "1"}}
      queryParams: {lang: {regex: "en|fr"}}
      port: 9080
    route: [{destination: {host: reviews}}]
""")
    assert route.match == RouteMatch(
        path=StringMatch("regex", "/reviews/[0-9]+", ignore_case=True),
        method=StringMatch("exact", "GET"),
        authority=StringMatch("prefix", "reviews"),
        scheme=StringMatch("exact", "http"),
        headers=(
            HeaderMatch("x-canary"),
            HeaderMatch("x-debug", StringMatch("exact", "1"), invert=True),
        ),
        query=(QueryMatch("lang", StringMatch("regex", "en|fr")),),
    )


def test_matches_for_other_ports_gateways_or_sources_are_left_out() -> None:
    routes = reviews_routes("""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  gateways: [mesh, bookinfo-gateway]
  http:
  - match: [{port: 9999}, {gateways: [bookinfo-gateway]}, {sourceLabels: {app: ratings}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - match: [{uri: {prefix: /beta}, sourceLabels: {app: productpage}, sourceNamespace: default}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{sourceLabels: {app: productpage}, gateways: [mesh], port: 9080}]
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: v3}}]
""")
    # The third rule holds for every request from this sidecar: it is its catch-all.
    assert [(r.match.path, r.clusters[0].cluster) for r in routes] == [
        (StringMatch("prefix", "/beta"), f"outbound|9080|v2|{REVIEWS}"),
        (None, f"outbound|9080|v1|{REVIEWS}"),
    ]


def test_a_virtual_service_for_gateways_only_leaves_the_mesh_on_the_default_route() -> None:
    (route,) = reviews_routes("""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  gateways: [bookinfo-gateway]
  http:
  - route: [{destination: {host: reviews, subset: v3}}]
""")
    assert route == Route(
        name="default",
        clusters=(WeightedCluster(f"outbound|9080||{REVIEWS}"),),
        retries=ISTIO_DEFAULT_RETRY,
    )


def test_istio_retries_by_default_and_reads_retry_on_as_istio_does() -> None:
    routes = reviews_routes("""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /default}}]
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /none}}]
    retries: {attempts: 0}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /codes}}]
    retries: {attempts: 4, perTryTimeout: 250ms, retryOn: "5xx, 429,503", backoff: 50ms}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /attempts-only}}]
    retries: {attempts: 3}
    route: [{destination: {host: reviews}}]
""")
    assert [r.retries for r in routes] == [
        ISTIO_DEFAULT_RETRY,
        None,
        RetryPolicy(
            attempts=4,
            per_try_timeout=0.25,
            retry_on=("5xx", "retriable-status-codes"),
            retriable_status_codes=(429, 503),
            backoff_base=0.05,
            backoff_max=0.5,
        ),
        RetryPolicy(
            attempts=3,
            retry_on=ISTIO_DEFAULT_RETRY.retry_on,
            retriable_status_codes=(503,),
        ),
    ]
    # A host without a VirtualService gets the same default.
    (ratings,) = host(sidecar(""), "ratings.prod.svc.cluster.local:9080").routes
    assert ratings.retries == ISTIO_DEFAULT_RETRY


def test_timeout_rewrite_headers_fault_and_mirror_travel_with_the_route() -> None:
    (route,) = reviews_routes("""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - timeout: 1.5s
    rewrite: {uri: /v2/, authority: reviews-v2}
    headers:
      request: {set: {X-Version: v2}, add: {X-Trace: "on"}, remove: [X-Debug]}
      response: {remove: [server]}
    fault:
      delay: {fixedDelay: 2s, percentage: {value: 12.5}}
      abort: {httpStatus: 503, percentage: {value: 1}}
    mirror: {host: ratings.prod, port: {number: 9090}}
    mirrorPercentage: {value: 5}
    route:
    - destination: {host: reviews, subset: v1}
      weight: 75
      headers: {response: {set: {x-subset: v1}}}
    - destination: {host: reviews, subset: v2}
      weight: 25
""")
    assert route.timeout == 1.5
    assert route.rewrite == Rewrite(prefix="/v2/", authority="reviews-v2")
    assert route.request_headers == HeaderOps(
        set=(("x-version", "v2"),), add=(("x-trace", "on"),), remove=("x-debug",)
    )
    assert route.response_headers == HeaderOps(remove=("server",))
    assert route.fault == Fault(delay=2.0, delay_percent=12.5, abort_status=503, abort_percent=1.0)
    assert route.mirrors == (Mirror("outbound|9090||ratings.prod.svc.cluster.local", 5.0),)
    assert route.clusters[0].response_headers == HeaderOps(set=(("x-subset", "v1"),))


def test_regex_rewrite_several_mirrors_and_faults_without_percentages() -> None:
    (route,) = reviews_routes("""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - rewrite: {uriRegexRewrite: {match: "^/old/(.*)$", rewrite: "/new/\\\\1"}}
    fault: {delay: {fixedDelay: 100ms}}
    mirrors:
    - destination: {host: reviews, subset: v3}
    - destination: {host: reviews, subset: v2}
      percentage: {value: 50}
    route: [{destination: {host: reviews}}]
""")
    assert route.rewrite == Rewrite(regex="^/old/(.*)$", substitution="/new/\\1")
    # Istio injects nothing when a fault gives no percentage.
    assert route.fault == Fault(delay=0.1, delay_percent=0.0)
    assert route.mirrors == (
        Mirror(f"outbound|9080|v3|{REVIEWS}", 100.0),
        Mirror(f"outbound|9080|v2|{REVIEWS}", 50.0),
    )


def test_redirects_and_direct_responses_answer_without_forwarding() -> None:
    routes = reviews_routes("""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, authority: reviews.example.com, scheme: https, port: 8443, redirectCode: 308}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - match: [{uri: {exact: /bytes}}]
    directResponse: {status: 200, body: {bytes: "aGVsbG8="}}
  - match: [{uri: {exact: /gone}}]
    directResponse: {status: 410}
""")
    assert routes[0].redirect == Redirect(
        status=308, path="/new", authority="reviews.example.com", scheme="https", port=8443
    )
    assert (routes[0].clusters, routes[0].retries, routes[0].timeout) == ((), None, None)
    assert [r.direct_response for r in routes[1:]] == [
        DirectResponse(418, "short and stout"),
        DirectResponse(200, "hello"),
        DirectResponse(410),
    ]


def test_a_destination_that_names_no_known_subset_gets_a_cluster_that_answers_503() -> None:
    snapshot = sidecar("""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v9}}]
""")
    (cluster,) = [c for c in snapshot.clusters if c.name == f"outbound|9080|v9|{REVIEWS}"]
    assert cluster.endpoints == ()
    assert cluster.labels.service == REVIEWS


def test_a_zero_timeout_means_none_and_zero_weights_are_dropped() -> None:
    (route,) = reviews_routes("""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - timeout: 0s
    route:
    - destination: {host: reviews, subset: v1}
      weight: 100
    - destination: {host: reviews, subset: v2}
      weight: 0
""")
    assert route.timeout is None
    assert route.clusters == (WeightedCluster(f"outbound|9080|v1|{REVIEWS}", weight=100),)


def test_a_virtual_service_exported_to_its_own_namespace_only_does_not_reach_others() -> None:
    routes = reviews_routes("""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: prod}
spec:
  hosts: [reviews.default.svc.cluster.local]
  exportTo: ["."]
  http:
  - route: [{destination: {host: reviews.default.svc.cluster.local, subset: v3}}]
""")
    assert [r.name for r in routes] == ["default"]


def test_service_entries_are_routed_by_their_hosts() -> None:
    snapshot = sidecar("""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin}
spec:
  hosts: [httpbin.org]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy}
spec:
  hosts: [legacy.internal]
  resolution: STATIC
  ports: [{number: 8080, name: http, targetPort: 80}]
  endpoints:
  - {address: 192.0.2.10, labels: {version: v1}, locality: eu-west/a}
  - {address: 192.0.2.11, ports: {http: 8081}, weight: 3}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: [httpbin.org]
  http:
  - timeout: 3s
    route: [{destination: {host: httpbin.org}}]
""")
    httpbin = host(snapshot, "httpbin.org:80")
    assert httpbin.domains == ("httpbin.org", "httpbin.org:80")
    assert httpbin.routes[0].clusters == (WeightedCluster("outbound|80||httpbin.org"),)
    assert host(snapshot, "legacy.internal:8080").domains == (
        "legacy.internal",
        "legacy.internal:8080",
    )
    clusters = {c.name: c for c in snapshot.clusters}
    # The TLS port is carried as opaque bytes (no virtual host), to the same DNS name.
    assert clusters["outbound|443||httpbin.org"].endpoints == (Endpoint("httpbin.org", 443),)
    assert clusters["outbound|80||httpbin.org"].endpoints == (Endpoint("httpbin.org", 80),)
    assert clusters["outbound|8080||legacy.internal"].endpoints == (
        Endpoint("192.0.2.10", 80, zone="eu-west/a", labels=(("version", "v1"),)),
        Endpoint("192.0.2.11", 8081, weight=3),
    )
