"""The telemetry stores, fed directly with a virtual clock: deltas of cumulative counters,
restarts, the window, and memory under its cap with 200 services sending."""

from __future__ import annotations

import tracemalloc

from gossamer.control.telemetry.metrics import (
    KEY_LABELS,
    MetricsSettings,
    MetricsStore,
    histogram_quantile,
)
from gossamer.control.telemetry.prometheus import BUCKET_BOUNDS, Sample, parse_requests
from gossamer.control.telemetry.service import Telemetry, TelemetrySettings
from gossamer.control.telemetry.spans import SpanSettings, SpanStore, decode_zipkin
from gossamer.proxy.stats import REQUEST_LABELS, ProxyStats


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def exposition(service: str, requests: int, code: str = "200") -> str:
    stats = ProxyStats()
    labels = dict.fromkeys(REQUEST_LABELS, "unknown")
    labels |= {
        "reporter": "destination",
        "destination_workload": f"{service}-v1",
        "destination_workload_namespace": "default",
        "destination_service_name": service,
        "destination_service_namespace": "default",
        "response_code": code,
        "response_flags": "-",
    }
    series = stats.series_for(tuple(labels[name] for name in REQUEST_LABELS))
    for index in range(requests):
        series.observe(float(index % 40), 10, 100)
    return stats.prometheus()


def test_scrapes_add_what_changed_and_a_restarted_proxy_counts_from_zero() -> None:
    clock = Clock()
    store = MetricsStore(clock=clock)
    assert store.ingest("p1", parse_requests(exposition("a", 10), KEY_LABELS)) == 10
    clock.now += 5
    assert store.ingest("p1", parse_requests(exposition("a", 25), KEY_LABELS)) == 15
    clock.now += 5
    assert store.ingest("p1", parse_requests(exposition("a", 4), KEY_LABELS)) == 4
    assert store.resets == 1
    found, _ = store.query(60, lambda key: key[5])
    assert found["a"].requests == 29
    assert sum(found["a"].buckets) == 29
    # A proxy that served before the store knew it only sets its starting point.
    assert store.ingest("p2", parse_requests(exposition("b", 50), KEY_LABELS), baseline=True) == 0
    clock.now += 5
    assert store.ingest("p2", parse_requests(exposition("b", 53), KEY_LABELS)) == 3


def test_the_window_slides() -> None:
    clock = Clock()
    store = MetricsStore(MetricsSettings(window_s=60, resolution_s=10), clock=clock)
    store.ingest("p", parse_requests(exposition("a", 10), KEY_LABELS))
    clock.now += 30
    store.ingest("p", parse_requests(exposition("a", 30), KEY_LABELS))
    assert store.query(20, lambda key: key[5])[0]["a"].requests == 20
    assert store.query(60, lambda key: key[5])[0]["a"].requests == 30
    clock.now += 100
    store.ingest("p", parse_requests(exposition("a", 30), KEY_LABELS))
    assert store.query(3600, lambda key: key[5])[0] == {}
    assert len(store.slots) == 1


def test_quantiles_interpolate_inside_buckets_as_prometheus_does() -> None:
    buckets = [0] * (len(BUCKET_BOUNDS) + 1)
    buckets[2] = 100  # (1, 5] ms
    assert histogram_quantile(0.5, buckets) == 3.0
    assert histogram_quantile(0.99, buckets) == 1 + 4 * 0.99
    assert histogram_quantile(0.5, [0] * 20) is None
    buckets[-1] = 1000
    assert histogram_quantile(0.99, buckets) == BUCKET_BOUNDS[-1]


def test_metrics_of_200_services_stay_under_the_cap() -> None:
    cap = 1024 * 1024
    clock = Clock()
    store = MetricsStore(MetricsSettings(max_bytes=cap), clock=clock)
    codes = ("200", "404", "500", "503")
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for scrape in range(60):  # ten minutes at 10 s
        clock.now += 10
        for service in range(200):
            samples = [
                Sample(
                    f"s{service}c{code}",
                    ("destination", "caller", "default", f"svc{service}-v1", "default",
                     f"svc{service}", "default", code),
                    scrape * 3,
                    tuple([scrape * 3] * 20),
                )
                for code in codes
            ]  # fmt: skip
            store.ingest(f"proxy{service}", samples)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert store.bytes_used() <= cap
    assert used <= cap * 1.25, used  # the estimate is close to what Python really holds
    assert store.evicted_slots > 0
    found, _ = store.query(3600, lambda key: key[5])
    assert len(found) == 200


def test_spans_of_200_services_stay_under_the_cap_and_evictions_are_counted() -> None:
    cap = 2 * 1024 * 1024
    store = SpanStore(SpanSettings(max_bytes=cap, max_traces=100_000))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for batch in range(100):
        body = (
            "["
            + ",".join(
                f'{{"traceId":"{batch + 1:016x}{service:016x}","id":"{service + 1:016x}",'
                f'"name":"svc{service}.default.svc.cluster.local:80/*","kind":"SERVER",'
                f'"timestamp":1700000000000000,"duration":1500,'
                f'"localEndpoint":{{"serviceName":"svc{service}.default"}},'
                f'"tags":{{"http.status_code":"200","http.method":"GET",'
                f'"http.url":"http://svc{service}/items/{batch}","node_id":"sidecar~x"}}}}'
                for service in range(200)
            )
            + "]"
        )
        store.add(decode_zipkin(body.encode()))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert store.bytes <= cap
    assert used <= cap * 1.5, used
    assert store.evicted > 0
    assert store.accepted == 20_000
    assert store.find(service="svc7.default", limit=5)


def test_stat_groups_services_by_callers_and_workloads_by_what_they_answered() -> None:
    telemetry = Telemetry(TelemetrySettings(), list)
    source = ("source", "web", "default", "api-v1", "default", "api", "default", "500")
    destination = ("destination", "unknown", "default", "api-v1", "default", "api", "default")
    telemetry.metrics.ingest(
        "p",
        [
            Sample("a", source, 10, tuple([10] * 20)),
            Sample("b", (*destination, "200"), 7, tuple([7] * 20)),
        ],
    )
    [service] = telemetry.stat("service", "default", 60)["items"]
    assert (service["name"], service["requests"], service["failures"]) == ("api", 10, 10)
    [workload] = telemetry.stat("workload", None, 60)["items"]
    assert (workload["name"], workload["requests"], workload["successRate"]) == ("api-v1", 7, 1.0)
    [edge] = telemetry.edges(None, 60)["items"]
    assert (edge["source"], edge["destination"]) == ("web.default", "api.default")
    graph = telemetry.graph(None, 60)
    assert [node["id"] for node in graph["nodes"]] == ["api.default", "web.default"]
    assert graph["edges"][0]["errorRate"] == 1.0
