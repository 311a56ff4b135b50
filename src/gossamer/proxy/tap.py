"""Taps: summaries of the requests a proxy finishes, sent to the control plane while a tap runs.

The control plane starts a tap with a filter and its bounds (`TapStart`); from then on the
listeners call `ProxyTaps.observe` with each finished request (one check per request when no
tap runs: `ProxyStats.tap` is None). Matches wait in a buffer of `BUFFER_EVENTS` at most (past
it they are dropped and counted) until the agent sends them, every `FLUSH_S`. A tap ends by
itself after `max_events` matches or `duration_s`, so a control plane that went away leaves no
tap running.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from gossamer.proxy.stats import ProxyStats
from gossamer.snapshot.protocol import TapEvent, TapEvents, TapFilter, TapStart

BUFFER_EVENTS: Final = 256
FLUSH_S: Final = 0.2
MAX_EVENTS: Final = 10_000
MAX_DURATION_S: Final = 600.0
MAX_HEADERS: Final = 32
MAX_VALUE: Final = 256
REDACTED: Final = frozenset(
    {b"authorization", b"proxy-authorization", b"cookie", b"set-cookie", b"x-api-key"}
)
TAP_DROPPED: Final = "gossamer_tap_events_dropped_total"


@dataclass(slots=True)
class _Tap:
    id: str
    filter: TapFilter
    max_events: int
    deadline: float
    matched: int = 0
    dropped: int = 0
    pending: list[TapEvent] = field(default_factory=list)
    ended: bool = False


class ProxyTaps:
    """The taps a proxy runs; the agent starts and stops them and sends what they collect."""

    def __init__(self, stats: ProxyStats, clock: Callable[[], float] = time.monotonic) -> None:
        self.stats = stats
        self.clock = clock
        self.taps: dict[str, _Tap] = {}

    def __repr__(self) -> str:
        return f"<ProxyTaps {len(self.taps)} running>"

    def start(self, message: TapStart) -> None:
        """Run a tap, within the proxy's own bounds whatever the message asks."""
        self.taps[message.id] = _Tap(
            message.id,
            message.filter,
            max(1, min(message.max_events, MAX_EVENTS)),
            self.clock() + max(0.0, min(message.duration_s, MAX_DURATION_S)),
        )
        self.stats.tap = self.observe

    def stop(self, tap_id: str) -> None:
        """End a tap now (its last events are not sent)."""
        self.taps.pop(tap_id, None)
        if not self.taps:
            self.stats.tap = None

    def stop_all(self) -> None:
        """End every tap (the stream to the control plane ended)."""
        self.taps.clear()
        self.stats.tap = None

    def observe(self, runtime: Any, exchange: Any, duration_ms: float) -> None:
        """A finished request (from the listener): keep a summary for each tap it matches."""
        event: TapEvent | None = None
        for tap in self.taps.values():
            if tap.ended or not _matches(tap.filter, runtime, exchange):
                continue
            tap.matched += 1
            if tap.matched >= tap.max_events:
                tap.ended = True
            if len(tap.pending) >= BUFFER_EVENTS:
                tap.dropped += 1
                self.stats.incr(TAP_DROPPED)
                continue
            if event is None:
                event = _event(runtime, exchange, duration_ms)
            tap.pending.append(event)

    def collect(self) -> list[TapEvents]:
        """What each tap has to send; ended taps (count or time) are removed."""
        now = self.clock()
        out = []
        for tap in list(self.taps.values()):
            if now >= tap.deadline:
                tap.ended = True
            if tap.pending or tap.ended or tap.dropped:
                out.append(TapEvents(tap.id, tuple(tap.pending), tap.ended, tap.dropped))
                tap.pending = []
                tap.dropped = 0
            if tap.ended:
                self.stop(tap.id)
        return out

    async def run(self, send: Callable[[TapEvents], Awaitable[None]]) -> None:
        """Send what the taps collect every `FLUSH_S`, until cancelled."""
        try:
            while True:
                await asyncio.sleep(FLUSH_S)
                for message in self.collect():
                    await send(message)
        finally:
            self.stop_all()


def _matches(wanted: TapFilter, runtime: Any, exchange: Any) -> bool:
    if runtime.role == "inbound":
        if wanted.reporter == "source":
            return False
        node = runtime.node
        service, namespace = node.service, node.namespace
    else:
        if wanted.reporter == "destination":
            return False
        cluster = exchange.cluster
        if cluster is None:
            return False
        labels = cluster.config.labels
        service, namespace = labels.service_name, labels.namespace
    if service != wanted.service or namespace != wanted.namespace:
        return False
    if wanted.method and exchange.head.method.decode("latin-1") != wanted.method:
        return False
    return not wanted.path_prefix or str(exchange.path).startswith(wanted.path_prefix)


def _event(runtime: Any, exchange: Any, duration_ms: float) -> TapEvent:
    node = runtime.node
    inbound = runtime.role == "inbound"
    cluster = exchange.cluster
    if inbound:
        destination = f"{node.service}.{node.namespace}"
        source = exchange.client.principal or exchange.client.peer
    else:
        labels = cluster.config.labels if cluster is not None else None
        destination = f"{labels.service_name}.{labels.namespace}" if labels is not None else ""
        source = f"{node.workload}.{node.namespace}"
    head = exchange.head
    headers = tuple(
        (
            name.decode("latin-1"),
            "REDACTED" if name.lower() in REDACTED else value[:MAX_VALUE].decode("latin-1"),
        )
        for name, value in head.headers[:MAX_HEADERS]
    )
    return TapEvent(
        timestamp=time.time(),
        reporter="destination" if inbound else "source",
        proxy=f"{node.workload}.{node.namespace}",
        method=head.method.decode("latin-1"),
        authority=str(exchange.authority),
        path=str(exchange.path),
        status=int(exchange.status),
        duration_ms=round(duration_ms, 3),
        flags=str(exchange.flags),
        request_id=bytes(exchange.request_id).decode("latin-1"),
        source=str(source),
        destination=destination,
        request_bytes=int(exchange.body_size),
        response_bytes=int(exchange.response_bytes),
        headers=headers,
    )
