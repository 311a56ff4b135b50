"""Go-style durations as Istio and Kubernetes write them (`1.5s`, `100ms`, `1h30m`) to seconds."""

from __future__ import annotations

import re
from decimal import Decimal

_PART = r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)"
_WHOLE = re.compile(rf"(?:{_PART})+")
_PARTS = re.compile(_PART)
_UNIT_SECONDS = {
    "h": Decimal(3600),
    "m": Decimal(60),
    "s": Decimal(1),
    "ms": Decimal("0.001"),
    "us": Decimal("0.000001"),
    "µs": Decimal("0.000001"),
    "ns": Decimal("0.000000001"),
}


def seconds(duration: str) -> float:
    """The length of `duration` in seconds; ValueError if it is not a duration."""
    if not _WHOLE.fullmatch(duration):
        raise ValueError(f"not a duration: {duration!r}")
    total = sum(
        (Decimal(number) * _UNIT_SECONDS[unit] for number, unit in _PARTS.findall(duration)),
        Decimal(0),
    )
    return float(total)
