"""Proxy metrics: Istio's standard request metrics and the proxy's own, as Prometheus text."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

# Istio's default buckets, so that existing Istio dashboards and alerts read these unchanged.
DURATION_BUCKETS_MS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
    600000, 1800000, 3600000,
)  # fmt: skip
SIZE_BUCKETS = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000)
# The same bounds as floats, which `_bucket` compares without converting.
_DURATION_BOUNDS = tuple(float(bound) for bound in DURATION_BUCKETS_MS)
_SIZE_BOUNDS = tuple(float(bound) for bound in SIZE_BUCKETS)

REQUEST_LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "connection_security_policy",
    "grpc_response_status",
    # The two that change per request come last, so a request's key is a prefix plus two values.
    "response_code",
    "response_flags",
)


class Histogram:
    """Cumulative-at-export bucket counts, a sum and a count (RequestSeries.observe fills them)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def lines(self, name: str, labels: str) -> Iterable[str]:
        """Prometheus exposition lines of this histogram."""
        running = 0
        sep = "," if labels else ""
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            yield f'{name}_bucket{{{labels}{sep}le="{_number(bound)}"}} {running}'
        running += self.counts[-1]
        yield f'{name}_bucket{{{labels}{sep}le="+Inf"}} {running}'
        yield f"{name}_sum{{{labels}}} {_number(self.sum)}"
        yield f"{name}_count{{{labels}}} {running}"


class RequestSeries:
    """The four Istio request metrics for one combination of labels."""

    __slots__ = ("duration", "request_bytes", "requests", "response_bytes")

    def __init__(self) -> None:
        self.requests = 0
        self.duration = Histogram(DURATION_BUCKETS_MS)
        self.request_bytes = Histogram(SIZE_BUCKETS)
        self.response_bytes = Histogram(SIZE_BUCKETS)

    def observe(self, duration_ms: float, request_bytes: int, response_bytes: int) -> None:
        """Count one finished request (the three histograms inline: this runs per request)."""
        self.requests += 1
        histogram = self.duration
        histogram.counts[_bucket(_DURATION_BOUNDS, duration_ms)] += 1
        histogram.sum += duration_ms
        histogram = self.request_bytes
        histogram.counts[_bucket(_SIZE_BOUNDS, request_bytes)] += 1
        histogram.sum += request_bytes
        histogram = self.response_bytes
        histogram.counts[_bucket(_SIZE_BOUNDS, response_bytes)] += 1
        histogram.sum += response_bytes


def _bucket(bounds: tuple[float, ...], value: float) -> int:
    """`bisect_left(bounds, value)` by a scan from the smallest bound: most values fall in the
    first few buckets, and compiled code compares floats without a call."""
    index = 0
    for bound in bounds:
        if value <= bound:
            return index
        index += 1
    return index


class ProxyStats:
    """Every metric of one proxy. Keys are label tuples in REQUEST_LABELS order."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, ...], RequestSeries] = {}
        self.counters: dict[str, int] = {}
        self.gauges: dict[str, float] = {}
        self.tap: Callable[[Any, Any, float], None] | None = None
        """Called with (listener runtime, exchange, duration ms) for each finished request
        while a tap runs (gossamer/proxy/tap.py); None, one check per request, otherwise."""

    def series_for(self, labels: tuple[str, ...]) -> RequestSeries:
        """The series of one combination of labels, made on first use and kept."""
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = RequestSeries()
        return series

    def incr(self, name: str, amount: int = 1) -> None:
        """Add to a proxy counter, e.g. `gossamer_upstream_retries_total{cluster="x"}`."""
        self.counters[name] = self.counters.get(name, 0) + amount

    def prometheus(self) -> str:
        """Everything, in the Prometheus text exposition format."""
        out: list[str] = []
        rendered = [(_labels(key), series) for key, series in sorted(self.series.items())]
        out.append("# TYPE istio_requests_total counter")
        out.extend(f"istio_requests_total{{{labels}}} {s.requests}" for labels, s in rendered)
        for name, attribute in (
            ("istio_request_duration_milliseconds", "duration"),
            ("istio_request_bytes", "request_bytes"),
            ("istio_response_bytes", "response_bytes"),
        ):
            out.append(f"# TYPE {name} histogram")
            for labels, series in rendered:
                histogram: Histogram = getattr(series, attribute)
                out.extend(histogram.lines(name, labels))
        out.extend(_families(self.counters, "counter"))
        out.extend(_families(self.gauges, "gauge"))
        return "\n".join(out) + "\n"


def _families(values: dict[str, int] | dict[str, float], kind: str) -> Iterable[str]:
    family = None
    for name in sorted(values):
        base = name.split("{", 1)[0]
        if base != family:
            family = base
            yield f"# TYPE {base} {kind}"
        yield f"{name} {_number(values[name])}"


def _labels(values: tuple[str, ...]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in zip(REQUEST_LABELS, values, strict=True))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)
