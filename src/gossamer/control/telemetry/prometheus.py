"""Reading a proxy's `/stats/prometheus`: the Istio request counter and duration histogram per
series, nothing else. The proxies render these (gossamer/proxy/stats.py); the parser takes the
text format as Prometheus defines it, so a line it does not expect is skipped, never fatal."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

REQUESTS = "istio_requests_total{"
BUCKETS = "istio_request_duration_milliseconds_bucket{"
BUCKET_BOUNDS = (
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
    30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
)  # fmt: skip
"""Istio's duration buckets in ms (the proxies' DURATION_BUCKETS_MS); +Inf is one more."""
_BOUND_INDEX = {bound: index for index, bound in enumerate(BUCKET_BOUNDS)}
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_UNESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True, slots=True)
class Sample:
    """One series of a proxy: its label text, the labels that key it, its cumulative values."""

    series: str
    key: tuple[str, ...]
    requests: int
    buckets: tuple[int, ...]
    """Cumulative counts per bucket of BUCKET_BOUNDS, +Inf last."""


def parse_requests(text: str, key_labels: tuple[str, ...]) -> list[Sample]:
    """The request series in an exposition, keyed by `key_labels` (missing ones are "")."""
    counts: dict[str, int] = {}
    buckets: dict[str, list[int]] = {}
    for line in text.splitlines():
        if line.startswith(REQUESTS):
            labels, value = _split(line, len(REQUESTS))
            if labels is not None:
                counts[labels] = int(value)
        elif line.startswith(BUCKETS):
            labels, value = _split(line, len(BUCKETS))
            if labels is None:
                continue
            series, _, bound = labels.rpartition(',le="')
            index = _bucket_index(bound[:-1])
            if index is None:
                continue
            row = buckets.get(series)
            if row is None:
                row = buckets[series] = [0] * (len(BUCKET_BOUNDS) + 1)
            row[index] = int(value)
    samples = []
    for series, requests in counts.items():
        values = dict(_labels(series))
        row = buckets.get(series) or [requests] * (len(BUCKET_BOUNDS) + 1)
        key = tuple(values.get(name, "") for name in key_labels)
        samples.append(Sample(series, key, requests, tuple(row)))
    return samples


def _split(line: str, start: int) -> tuple[str | None, float]:
    """(label text, value) of `name{labels} value`; (None, 0) when malformed."""
    end = line.rfind("} ")
    if end < start:
        return None, 0.0
    try:
        value = float(line[end + 2 :].split(" ", 1)[0])
    except ValueError:
        return None, 0.0
    if not math.isfinite(value) or value < 0:
        return None, 0.0
    return line[start:end], value


def _bucket_index(bound: str) -> int | None:
    if bound == "+Inf":
        return len(BUCKET_BOUNDS)
    try:
        return _BOUND_INDEX.get(float(bound))
    except ValueError:
        return None


def _labels(text: str) -> list[tuple[str, str]]:
    return [(name, _UNESCAPE.sub(_unescaped, value)) for name, value in _LABEL.findall(text)]


def _unescaped(match: re.Match[str]) -> str:
    char = match.group(1)
    return "\n" if char == "n" else char
