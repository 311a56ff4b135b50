"""Scraping: every `interval_s`, each connected proxy's `/stats/prometheus` (at the admin
address its hello announced), fed to the metrics store. Scrapes run `concurrency` at a time,
each within `timeout_s` and `max_bytes`; a proxy that fails is counted and tried again at the
next round. The proxies' own counters stay the truth: the store keeps differences of them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gossamer.control.telemetry.metrics import KEY_LABELS, MetricsStore
from gossamer.control.telemetry.prometheus import parse_requests

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScrapeTarget:
    """One proxy to scrape: a stable name, its admin `HOST:PORT`, and whether it served before
    it connected here (its counters then hold requests this store never saw begin)."""

    name: str
    admin: str
    served_before: bool


@dataclass(frozen=True, slots=True)
class ScrapeSettings:
    """How often and how patiently to scrape."""

    interval_s: float = 5.0
    timeout_s: float = 2.0
    concurrency: int = 16
    max_bytes: int = 8 * 1024 * 1024


class Scraper:
    """The task that scrapes every target in turn, round after round."""

    def __init__(
        self,
        store: MetricsStore,
        targets: Callable[[], Iterable[ScrapeTarget]],
        settings: ScrapeSettings | None = None,
    ) -> None:
        self.store = store
        self.targets = targets
        self.settings = settings or ScrapeSettings()
        self.scrapes = 0
        self.failures = 0
        self.rounds = 0
        self.last_round = 0.0
        self._task: asyncio.Task[None] | None = None
        self._failing: set[str] = set()

    def __repr__(self) -> str:
        return f"<Scraper {self.rounds} rounds, {self.scrapes} scrapes, {self.failures} failed>"

    def start(self) -> None:
        """Scrape from now on."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop scraping."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            await self.scrape_all()
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.05, self.settings.interval_s - elapsed))

    async def scrape_all(self) -> None:
        """One round: every target once."""
        gate = asyncio.Semaphore(self.settings.concurrency)

        async def one(target: ScrapeTarget) -> None:
            async with gate:
                await self.scrape(target)

        await asyncio.gather(*(one(target) for target in list(self.targets())))
        self.rounds += 1
        self.last_round = time.time()

    async def scrape(self, target: ScrapeTarget) -> None:
        """Scrape one proxy into the store."""
        settings = self.settings
        try:
            text = await fetch(target.admin, "/stats/prometheus", settings)
        except (OSError, TimeoutError, ValueError) as error:
            self.failures += 1
            if target.name not in self._failing:
                self._failing.add(target.name)
                log.warning("scraping %s at %s failed: %s", target.name, target.admin, error)
            return
        self._failing.discard(target.name)
        self.scrapes += 1
        samples = parse_requests(text, KEY_LABELS)
        self.store.ingest(target.name, samples, baseline=target.served_before)


async def fetch(address: str, path: str, settings: ScrapeSettings) -> str:
    """GET `http://ADDRESS/PATH` on a connection of its own; the body of a 200, as text."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    async with asyncio.timeout(settings.timeout_s):
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode()
            )
            chunks: list[bytes] = []
            size = 0
            while chunk := await reader.read(64 * 1024):
                size += len(chunk)
                if size > settings.max_bytes:
                    raise ValueError(f"more than {settings.max_bytes} bytes of metrics")
                chunks.append(chunk)
        finally:
            writer.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split(b" ")
    if len(status) < 2 or status[1] != b"200":
        raise ValueError(f"answered {head[:60]!r}")
    return body.decode("utf-8", "replace")
