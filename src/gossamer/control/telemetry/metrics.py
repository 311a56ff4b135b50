"""Request metrics over a sliding window: Istio's request counters and duration buckets, as the
proxies' `/stats/prometheus` report them, summed into slots of `resolution_s` seconds.

A scrape gives each series' cumulative values; the store keeps the last ones per proxy and adds
the difference to the current slot (a counter that went down is a restarted proxy: its whole
value is new). Slots hold series aggregated to what queries group by (reporter, source
workload, destination workload and service, response code), so memory grows with the mesh's
edges, not with its proxies. Everything is bounded: slots older than the window go, and
`max_bytes` (an estimate of what the entries cost) evicts the oldest slot first; a single slot
that would exceed it drops new series instead. Both are counted.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from gossamer.control.telemetry.prometheus import BUCKET_BOUNDS, Sample

KEY_LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "destination_workload",
    "destination_workload_namespace",
    "destination_service_name",
    "destination_service_namespace",
    "response_code",
)
"""What a slot's series are keyed by: what stat, edges and top group by."""

ENTRY_BYTES = 480
"""What one aggregated series in a slot costs, measured with tracemalloc (key tuple, list of
bucket counts, dict slot)."""
LAST_BYTES = 360
"""What one proxy series' last cumulative values cost."""

Key = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """How long and how finely to keep metrics, and the memory they may take."""

    window_s: float = 3600.0
    resolution_s: float = 10.0
    max_bytes: int = 64 * 1024 * 1024
    proxy_ttl_s: float = 300.0
    """How long a proxy's last values are kept after it was last scraped."""


class Golden:
    """Requests, failures (5xx) and duration buckets of one group, summed over a window."""

    __slots__ = ("buckets", "failures", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.failures = 0
        self.buckets = [0] * (len(BUCKET_BOUNDS) + 1)

    def add(self, requests: int, failed: bool, buckets: list[int]) -> None:
        """Add one entry's counts."""
        self.requests += requests
        if failed:
            self.failures += requests
        mine = self.buckets
        for index, count in enumerate(buckets):
            mine[index] += count

    def success_rate(self) -> float | None:
        """Share of requests that were not 5xx; None without requests."""
        return (self.requests - self.failures) / self.requests if self.requests else None

    def quantile(self, q: float) -> float | None:
        """The q-quantile of durations in ms, as Prometheus' histogram_quantile computes it."""
        return histogram_quantile(q, self.buckets)

    def summary(self, seconds: float) -> dict[str, float | int | None]:
        """The golden metrics over `seconds`."""
        return {
            "requests": self.requests,
            "failures": self.failures,
            "rps": self.requests / seconds if seconds > 0 else 0.0,
            "successRate": self.success_rate(),
            "latencyP50": self.quantile(0.5),
            "latencyP95": self.quantile(0.95),
            "latencyP99": self.quantile(0.99),
        }


def histogram_quantile(q: float, buckets: list[int]) -> float | None:
    """Linear interpolation inside the bucket holding rank q*total (the lowest bucket from 0);
    a rank in the +Inf bucket is the highest finite bound. None without observations."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    running = 0
    for index, count in enumerate(buckets):
        if running + count >= rank and count > 0:
            if index >= len(BUCKET_BOUNDS):
                return BUCKET_BOUNDS[-1]
            lower = BUCKET_BOUNDS[index - 1] if index > 0 else 0.0
            upper = BUCKET_BOUNDS[index]
            return lower + (upper - lower) * (rank - running) / count
        running += count
    return BUCKET_BOUNDS[-1]


@dataclass(slots=True)
class _Slot:
    start: float
    entries: dict[Key, list[int]] = field(default_factory=dict)
    """Key -> [requests, bucket counts...]."""


@dataclass(slots=True)
class _ProxySeries:
    """What one proxy reported last: series -> (requests, cumulative buckets)."""

    seen: float
    last: dict[str, tuple[int, tuple[int, ...]]] = field(default_factory=dict)


class MetricsStore:
    """Slots of aggregated request metrics, newest last."""

    def __init__(
        self, settings: MetricsSettings | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings or MetricsSettings()
        self.clock = clock
        self.started = clock()
        self.slots: deque[_Slot] = deque()
        self.proxies: dict[str, _ProxySeries] = {}
        self.entries = 0
        self.last_entries = 0
        self.dropped_series = 0
        self.evicted_slots = 0
        self.resets = 0

    def __repr__(self) -> str:
        return (
            f"<MetricsStore {len(self.slots)} slots, {self.entries} entries, "
            f"{len(self.proxies)} proxies, ~{self.bytes_used() // 1024} KiB>"
        )

    def bytes_used(self) -> int:
        """The estimate `max_bytes` bounds."""
        return self.entries * ENTRY_BYTES + self.last_entries * LAST_BYTES

    def ingest(self, proxy: str, samples: Iterable[Sample], *, baseline: bool = False) -> int:
        """Add what changed since `proxy`'s last report; returns the requests added. With
        `baseline`, a proxy seen for the first time only sets its starting values (it served
        before this store knew it, e.g. across a control-plane restart)."""
        now = self.clock()
        known = self.proxies.get(proxy)
        if known is None:
            known = self.proxies[proxy] = _ProxySeries(now)
        else:
            baseline = False
        known.seen = now
        slot = self._slot(now)
        added = 0
        for sample in samples:
            previous = known.last.get(sample.series)
            if previous is None:
                self.last_entries += 1
            known.last[sample.series] = (sample.requests, sample.buckets)
            if baseline:
                continue
            if previous is None or sample.requests < previous[0]:
                if previous is not None:
                    self.resets += 1
                requests, buckets = sample.requests, _spread(sample.buckets)
            else:
                requests = sample.requests - previous[0]
                buckets = _spread(sample.buckets, previous[1])
            if requests > 0:
                self._add(slot, sample.key, requests, buckets)
                added += requests
        self._bound()
        return added

    def forget(self, proxy: str) -> None:
        """Drop a proxy's last values (it is gone for good)."""
        known = self.proxies.pop(proxy, None)
        if known is not None:
            self.last_entries -= len(known.last)

    def _slot(self, now: float) -> _Slot:
        resolution = self.settings.resolution_s
        start = math.floor(now / resolution) * resolution
        if not self.slots or self.slots[-1].start < start:
            self.slots.append(_Slot(start))
        return self.slots[-1]

    def _add(self, slot: _Slot, key: Key, requests: int, buckets: list[int]) -> None:
        entry = slot.entries.get(key)
        if entry is None:
            if self._full(slot):
                self.dropped_series += 1
                return
            slot.entries[key] = [requests, *buckets]
            self.entries += 1
            return
        entry[0] += requests
        for index, count in enumerate(buckets, 1):
            entry[index] += count

    def _full(self, slot: _Slot) -> bool:
        """No room for one more entry, after evicting every older slot if need be."""
        limit = self.settings.max_bytes
        while self.bytes_used() + ENTRY_BYTES > limit and self.slots and self.slots[0] is not slot:
            self._evict()
        return self.bytes_used() + ENTRY_BYTES > limit

    def _evict(self) -> None:
        old = self.slots.popleft()
        self.entries -= len(old.entries)
        self.evicted_slots += 1

    def _bound(self) -> None:
        now = self.clock()
        horizon = now - self.settings.window_s
        while self.slots and self.slots[0].start + self.settings.resolution_s <= horizon:
            old = self.slots.popleft()
            self.entries -= len(old.entries)
        stale = now - self.settings.proxy_ttl_s
        for name in [name for name, known in self.proxies.items() if known.seen < stale]:
            self.forget(name)

    def query(
        self, window_s: float, group: Callable[[Key], str | None]
    ) -> tuple[dict[str, Golden], float]:
        """Golden metrics per group over the last `window_s` (a slot counts when it overlaps);
        `group` names an entry's group, or None to leave it out. Also returns the seconds the
        window really covers (less while the store is younger than it)."""
        now = self.clock()
        since = now - window_s
        out: dict[str, Golden] = {}
        for slot in self.slots:
            if slot.start + self.settings.resolution_s <= since:
                continue
            for key, entry in slot.entries.items():
                name = group(key)
                if name is None:
                    continue
                golden = out.get(name)
                if golden is None:
                    golden = out[name] = Golden()
                golden.add(entry[0], key[-1].startswith("5"), entry[1:])
        covered = max(min(window_s, now - self.started), self.settings.resolution_s)
        return out, covered

    def history(
        self, window_s: float, group: Callable[[Key], str | None]
    ) -> tuple[list[float], dict[str, list[Golden]]]:
        """Golden metrics per group and slot over the last `window_s`: the start of each
        complete slot (oldest first, one every `resolution_s`, empty ones included, none from
        before the store began) and each group's slots in the same order. The current slot is
        left out: its scrapes are still coming, and its rate would read low."""
        resolution = self.settings.resolution_s
        count = max(
            1, min(math.ceil(window_s / resolution), int(self.settings.window_s / resolution))
        )
        last = math.floor(self.clock() / resolution) * resolution - resolution
        first = max(
            last - resolution * (count - 1), math.floor(self.started / resolution) * resolution
        )
        starts = [
            first + resolution * index for index in range(round((last - first) / resolution) + 1)
        ]
        out: dict[str, list[Golden]] = {}
        for slot in self.slots:
            index = round((slot.start - first) / resolution)
            if not 0 <= index < len(starts):
                continue
            for key, entry in slot.entries.items():
                name = group(key)
                if name is None:
                    continue
                row = out.get(name)
                if row is None:
                    row = out[name] = [Golden() for _ in starts]
                row[index].add(entry[0], key[-1].startswith("5"), entry[1:])
        return starts, out

    def status(self) -> Mapping[str, int | float]:
        """Figures about the store itself, for /telemetry/v1/status."""
        return {
            "slots": len(self.slots),
            "entries": self.entries,
            "proxies": len(self.proxies),
            "bytes": self.bytes_used(),
            "maxBytes": self.settings.max_bytes,
            "droppedSeries": self.dropped_series,
            "evictedSlots": self.evicted_slots,
            "counterResets": self.resets,
        }


def _spread(cumulative: tuple[int, ...], previous: tuple[int, ...] | None = None) -> list[int]:
    """Per-bucket counts from cumulative ones (Prometheus' `le`), less what `previous` held."""
    out = []
    below = 0
    below_before = 0
    for index, running in enumerate(cumulative):
        before = previous[index] if previous is not None and index < len(previous) else 0
        out.append(max(0, (running - below) - (before - below_before)))
        below, below_before = running, before
    return out
