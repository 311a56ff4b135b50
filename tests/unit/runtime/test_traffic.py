"""Requests per second per service, from sidecars' Prometheus text."""

from __future__ import annotations

from gossamer.runtime.traffic import RateMeter, served_requests

METRICS = """\
# TYPE istio_requests_total counter
istio_requests_total{reporter="destination",source_workload="frontend",destination_service_name="greeter",response_code="200"} 90
istio_requests_total{reporter="destination",source_workload="frontend",destination_service_name="greeter",response_code="503"} 10
istio_requests_total{reporter="source",source_workload="greeter",destination_service_name="ratings",response_code="200"} 70
"""


def test_served_requests_counts_what_the_workload_served_not_what_it_called() -> None:
    assert served_requests(METRICS) == {"greeter": 100.0}


def test_rates_are_per_second_across_proxies_and_never_negative() -> None:
    meter = RateMeter()
    meter.read([{"greeter": 100.0}, {"greeter": 50.0}], now=10.0)
    assert meter.rates == {}
    meter.read([{"greeter": 130.0}, {"greeter": 70.0}], now=12.0)
    assert meter.rates == {"greeter": 25.0}
    meter.read([{"greeter": 5.0}], now=13.0)  # a sidecar restarted from zero
    assert meter.rates == {"greeter": 0.0}
