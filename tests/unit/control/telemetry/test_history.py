"""What the dashboard reads besides `stat`: golden metrics per slot (its sparklines) and which
workload serves which service (what joins the graph's nodes), fed with a virtual clock."""

from __future__ import annotations

from gossamer.control.telemetry.metrics import MetricsSettings
from gossamer.control.telemetry.prometheus import Sample
from gossamer.control.telemetry.service import Telemetry, TelemetrySettings

SOURCE = ("source", "web", "default", "api-v1", "default", "api", "default")
GATEWAY = ("source", "gw", "istio-system", "web", "default", "web", "default")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def telemetry_at(clock: Clock) -> Telemetry:
    telemetry = Telemetry(TelemetrySettings(metrics=MetricsSettings(window_s=120)), list)
    telemetry.metrics.clock = clock
    telemetry.metrics.started = clock.now
    return telemetry


def test_history_has_one_point_per_complete_slot_oldest_first_empty_slots_included() -> None:
    clock = Clock()
    telemetry = telemetry_at(clock)
    store = telemetry.metrics
    # Cumulative counters, as scrapes give them: 20 ok in the first slot, none in the next,
    # then 10 failures.
    store.ingest("p", [Sample("ok", (*SOURCE, "200"), 20, tuple([20] * 20))])
    clock.now += 20
    store.ingest("p", [Sample("ok", (*SOURCE, "200"), 20, tuple([20] * 20))])
    store.ingest("p", [Sample("bad", (*SOURCE, "503"), 10, tuple([10] * 20))])
    # The slot being filled is not shown yet.
    assert telemetry.history("service", None, 60)["starts"] == [1_000_000.0, 1_000_010.0]
    clock.now += 10
    history = telemetry.history("service", None, 60)
    assert history["resolution"] == 10
    assert history["starts"] == [1_000_000.0, 1_000_010.0, 1_000_020.0]
    [api] = history["items"]
    assert (api["name"], api["namespace"]) == ("api", "default")
    assert api["rps"] == [2.0, 0.0, 1.0]
    assert api["successRate"] == [1.0, None, 0.0]
    assert api["latencyP95"][1] is None


def test_history_reaches_neither_before_the_store_began_nor_past_its_window() -> None:
    clock = Clock()
    telemetry = telemetry_at(clock)
    assert telemetry.history("workload", None, 3600)["starts"] == []
    clock.now += 1000
    history = telemetry.history("workload", None, 3600)
    assert len(history["starts"]) == 12  # the store's 120 s, in 10 s slots
    assert history["items"] == []


def test_the_graph_says_which_workload_serves_which_service() -> None:
    clock = Clock()
    telemetry = telemetry_at(clock)
    telemetry.metrics.ingest(
        "p",
        [
            Sample("a", (*SOURCE, "200"), 5, tuple([5] * 20)),
            Sample("b", (*GATEWAY, "200"), 5, tuple([5] * 20)),
        ],
    )
    graph = telemetry.graph(None, 60)
    assert graph["serves"] == [
        {"workload": "api-v1.default", "service": "api.default"},
        {"workload": "web.default", "service": "web.default"},
    ]
    assert telemetry.graph("istio-system", 60)["serves"] == []
