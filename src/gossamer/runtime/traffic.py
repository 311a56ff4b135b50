"""Requests per second per service, read from the sidecars' Prometheus metrics.

Each sidecar counts the requests its workload served (`istio_requests_total` with
`reporter="destination"`); summed per service and differenced over time, that is the rate
the live view and `gossamer status` show.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping

_SERVED = re.compile(
    r'^istio_requests_total\{reporter="destination",[^}]*destination_service_name="([^"]*)"[^}]*\}'
    r" ([0-9.e+]+)$",
    re.MULTILINE,
)


def served_requests(metrics: str) -> dict[str, float]:
    """Requests served per destination service, from one proxy's Prometheus text."""
    totals: dict[str, float] = {}
    for service, count in _SERVED.findall(metrics):
        totals[service] = totals.get(service, 0.0) + float(count)
    return totals


class RateMeter:
    """Turns growing per-service totals into per-second rates between two readings."""

    def __init__(self) -> None:
        self.rates: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._at = 0.0

    def __repr__(self) -> str:
        return f"<RateMeter {self.rates}>"

    def read(self, readings: Iterable[Mapping[str, float]], now: float | None = None) -> None:
        """Record the sum of this round's readings (one per proxy)."""
        now = time.monotonic() if now is None else now
        totals: dict[str, float] = {}
        for reading in readings:
            for service, count in reading.items():
                totals[service] = totals.get(service, 0.0) + count
        if self._at:
            elapsed = max(now - self._at, 1e-6)
            # A restarted sidecar starts again from zero: never report a negative rate.
            self.rates = {
                service: max(0.0, (count - self._last.get(service, 0.0)) / elapsed)
                for service, count in totals.items()
            }
        self._last, self._at = totals, now
