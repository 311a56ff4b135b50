"""The built-in telemetry of one control plane: the stores, the scraper, the taps, and the
answers to `stat`, `edges`, `top` and the service graph."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gossamer.control.telemetry.metrics import Golden, Key, MetricsSettings, MetricsStore
from gossamer.control.telemetry.scraper import Scraper, ScrapeSettings, ScrapeTarget
from gossamer.control.telemetry.spans import SpanSettings, SpanStore
from gossamer.control.telemetry.taps import TapHub

UNKNOWN = "unknown"
# Positions in metrics.KEY_LABELS.
_REPORTER, _SRC_WL, _SRC_NS, _DST_WL, _DST_NS, _SVC, _SVC_NS, _CODE = range(8)


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """The built-in telemetry's bounds (every one with a default)."""

    enabled: bool = True
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    spans: SpanSettings = field(default_factory=SpanSettings)
    scrape: ScrapeSettings = field(default_factory=ScrapeSettings)
    max_span_body_bytes: int = 4 * 1024 * 1024
    """A span POST larger than this is refused with 413."""


@dataclass(frozen=True, slots=True)
class Inventory:
    """What the mesh holds besides metrics: connected sidecars and Deployment replicas, per
    `WORKLOAD.NAMESPACE`, for the MESHED column."""

    proxies: Mapping[str, int]
    replicas: Mapping[str, int]


class Telemetry:
    """Metrics and spans kept in memory, and what is asked of them."""

    def __init__(
        self,
        settings: TelemetrySettings,
        targets: Callable[[], Iterable[ScrapeTarget]],
        inventory: Callable[[], Inventory] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = MetricsStore(settings.metrics)
        self.spans = SpanStore(settings.spans)
        self.taps = TapHub()
        self.scraper = Scraper(self.metrics, targets, settings.scrape)
        self.inventory = inventory or (lambda: Inventory({}, {}))

    def __repr__(self) -> str:
        return f"<Telemetry {self.metrics!r} {self.spans!r} {self.scraper!r}>"

    def start(self) -> None:
        """Scrape from now on (when enabled)."""
        if self.settings.enabled:
            self.scraper.start()

    async def close(self) -> None:
        """Stop scraping."""
        await self.scraper.close()

    def stat(self, kind: str, namespace: str | None, window_s: float) -> dict[str, Any]:
        """Golden metrics per service (what its callers saw: `reporter=source`) or per workload
        (what it answered: `reporter=destination`), in one namespace or all."""
        if kind == "service":
            group = _group(_SVC, _SVC_NS, "source", namespace)
        else:
            group = _group(_DST_WL, _DST_NS, "destination", namespace)
        found, covered = self.metrics.query(window_s, group)
        inventory = self.inventory()
        if kind != "service":
            for name in inventory.replicas:
                if namespace is None or name.endswith("." + namespace):
                    found.setdefault(name, Golden())
        items = []
        for name, golden in sorted(found.items()):
            workload, _, space = name.rpartition(".")
            meshed = (
                "-"
                if kind == "service"
                else f"{inventory.proxies.get(name, 0)}/{inventory.replicas.get(name, 0)}"
            )
            items.append(
                {"name": workload, "namespace": space, "meshed": meshed} | golden.summary(covered)
            )
        return {"kind": "StatList", "window": window_s, "covered": covered, "items": items}

    def history(self, kind: str, namespace: str | None, window_s: float) -> dict[str, Any]:
        """Golden metrics per service or workload (grouped as `stat` groups them) and per slot
        of the store: requests per second, success rate (None without requests) and p95."""
        if kind == "service":
            group = _group(_SVC, _SVC_NS, "source", namespace)
        else:
            group = _group(_DST_WL, _DST_NS, "destination", namespace)
        starts, found = self.metrics.history(window_s, group)
        resolution = self.metrics.settings.resolution_s
        items = []
        for name, slots in sorted(found.items()):
            workload, _, space = name.rpartition(".")
            items.append(
                {
                    "name": workload,
                    "namespace": space,
                    "rps": [golden.requests / resolution for golden in slots],
                    "successRate": [golden.success_rate() for golden in slots],
                    "latencyP95": [golden.quantile(0.95) for golden in slots],
                }
            )
        return {
            "kind": "History",
            "window": window_s,
            "resolution": resolution,
            "starts": starts,
            "items": items,
        }

    def edges(self, namespace: str | None, window_s: float) -> dict[str, Any]:
        """Golden metrics per edge, caller workload -> destination service, as callers saw them."""

        def group(key: Key) -> str | None:
            if key[_REPORTER] != "source" or key[_SVC] == UNKNOWN:
                return None
            if namespace is not None and namespace not in (key[_SRC_NS], key[_SVC_NS]):
                return None
            return f"{key[_SRC_WL]}.{key[_SRC_NS]}\t{key[_SVC]}.{key[_SVC_NS]}"

        found, covered = self.metrics.query(window_s, group)
        items = []
        for name, golden in sorted(found.items()):
            source, destination = name.split("\t")
            items.append({"source": source, "destination": destination} | golden.summary(covered))
        return {"kind": "EdgeList", "window": window_s, "covered": covered, "items": items}

    def graph(self, namespace: str | None, window_s: float) -> dict[str, Any]:
        """The service graph: workloads and services as nodes, edges with rates and errors."""
        edges = self.edges(namespace, window_s)
        nodes: dict[str, dict[str, Any]] = {}
        out = []
        for edge in edges["items"]:
            nodes.setdefault(edge["source"], {"id": edge["source"], "kind": "workload"})
            nodes.setdefault(edge["destination"], {"id": edge["destination"], "kind": "service"})
            requests = int(edge["requests"])
            out.append(
                {
                    "source": edge["source"],
                    "destination": edge["destination"],
                    "rps": edge["rps"],
                    "errorRate": edge["failures"] / requests if requests else 0.0,
                    "latencyP95": edge["latencyP95"],
                }
            )
        return {
            "kind": "ServiceGraph",
            "window": window_s,
            "covered": edges["covered"],
            "nodes": sorted(nodes.values(), key=lambda node: str(node["id"])),
            "edges": out,
            "serves": self._serves(namespace, window_s),
        }

    def _serves(self, namespace: str | None, window_s: float) -> list[dict[str, str]]:
        """Which workload answered for which service in the window: what joins a service's
        node to its workloads' calls (frontend the service -> frontend the Deployment)."""

        def group(key: Key) -> str | None:
            if UNKNOWN in (key[_SVC], key[_DST_WL]):
                return None
            if namespace is not None and namespace not in (key[_DST_NS], key[_SVC_NS]):
                return None
            return f"{key[_DST_WL]}.{key[_DST_NS]}\t{key[_SVC]}.{key[_SVC_NS]}"

        found, _ = self.metrics.query(window_s, group)
        pairs = (name.split("\t") for name in sorted(found))
        return [{"workload": workload, "service": service} for workload, service in pairs]

    def status(self) -> dict[str, Any]:
        """The stores' figures and the scraper's, for operators and tests."""
        scraper = self.scraper
        return {
            "metrics": dict(self.metrics.status()),
            "spans": self.spans.status(),
            "scrapes": {
                "rounds": scraper.rounds,
                "scrapes": scraper.scrapes,
                "failures": scraper.failures,
                "lastRound": scraper.last_round,
                "intervalSeconds": scraper.settings.interval_s,
            },
            "taps": {"running": len(self.taps.sessions), "started": self.taps.started},
        }


def _group(
    name_at: int, namespace_at: int, reporter: str, namespace: str | None
) -> Callable[[Key], str | None]:
    def group(key: Key) -> str | None:
        if key[_REPORTER] != reporter or key[name_at] == UNKNOWN:
            return None
        if namespace is not None and key[namespace_at] != namespace:
            return None
        return f"{key[name_at]}.{key[namespace_at]}"

    return group
