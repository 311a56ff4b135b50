"""Spans the proxies export (Zipkin v2 JSON), checked, and kept as traces within a memory bound.

A batch is checked whole before any of it is kept: ids in lowercase hex of the right length,
a timestamp, a duration, bounded names and tags. A bad batch is refused (the receiver answers
400) and counted by reason. Traces are kept in arrival order of their first span; past
`max_bytes` (an estimate: what the span's strings hold plus a fixed cost) or `max_traces`, the
oldest trace goes first, and every span so evicted is counted.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec

SPAN_BYTES = 420
"""What a kept span costs besides its strings (struct, dict of tags, list slot), measured."""
TAG_BYTES = 120
"""What one tag costs besides its strings."""
MAX_TAGS = 64
MAX_TEXT = 4096
"""The longest name, tag key or value, or service name a span may carry."""
_HEX = frozenset("0123456789abcdef")


class SpanError(ValueError):
    """A span the receiver refuses; `reason` is what it is counted as."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Endpoint(msgspec.Struct, frozen=True):
    """Zipkin's endpoint: who reports the span, or its peer."""

    serviceName: str = ""  # noqa: N815 (Zipkin's field names)
    ipv4: str = ""
    ipv6: str = ""
    port: int = 0


class ZipkinSpan(msgspec.Struct, frozen=True):
    """One span of a Zipkin v2 list (the fields this store keeps; others are ignored)."""

    traceId: str  # noqa: N815
    id: str
    name: str = ""
    parentId: str | None = None  # noqa: N815
    kind: str | None = None
    timestamp: int = 0
    duration: int = 0
    localEndpoint: Endpoint | None = None  # noqa: N815
    remoteEndpoint: Endpoint | None = None  # noqa: N815
    tags: dict[str, str] = {}


_decoder = msgspec.json.Decoder(list[ZipkinSpan])


class StoredSpan(msgspec.Struct, frozen=True):
    """A span as kept and answered."""

    traceId: str  # noqa: N815
    id: str
    parentId: str | None  # noqa: N815
    name: str
    kind: str
    service: str
    timestamp: int
    """Start, microseconds since the epoch."""
    duration: int
    """Microseconds."""
    error: bool
    tags: dict[str, str]

    def cost(self) -> int:
        """What keeping it costs, by the store's estimate."""
        tags = sum(len(k) + len(v) + TAG_BYTES for k, v in self.tags.items())
        return SPAN_BYTES + len(self.name) + len(self.service) + tags


def decode_zipkin(body: bytes) -> list[StoredSpan]:
    """A Zipkin v2 JSON list, checked whole; SpanError says why it is refused."""
    try:
        spans = _decoder.decode(body)
    except msgspec.DecodeError as error:
        raise SpanError("malformed", f"not a Zipkin v2 JSON list of spans: {error}") from None
    return [_checked(span, index) for index, span in enumerate(spans)]


def _checked(span: ZipkinSpan, index: int) -> StoredSpan:
    where = f"span {index}"
    _hex_id(span.traceId, (16, 32), f"{where}: traceId")
    _hex_id(span.id, (16,), f"{where}: id")
    if span.parentId is not None:
        _hex_id(span.parentId, (16,), f"{where}: parentId")
    if span.timestamp <= 0 or span.duration < 0:
        raise SpanError("invalid", f"{where}: needs a timestamp and a duration of 0 or more")
    if len(span.tags) > MAX_TAGS:
        raise SpanError("too_large", f"{where}: more than {MAX_TAGS} tags")
    service = span.localEndpoint.serviceName if span.localEndpoint is not None else ""
    texts = [span.name, service, *span.tags, *span.tags.values()]
    if any(len(text) > MAX_TEXT for text in texts):
        raise SpanError("too_large", f"{where}: a name or tag is longer than {MAX_TEXT}")
    status = span.tags.get("http.status_code", "")
    error = "error" in span.tags or status.startswith("5")
    return StoredSpan(
        traceId=span.traceId.rjust(32, "0"),
        id=span.id,
        parentId=span.parentId,
        name=span.name,
        kind=span.kind or "",
        service=service or "unknown",
        timestamp=span.timestamp,
        duration=span.duration,
        error=error,
        tags=span.tags,
    )


def _hex_id(value: str, lengths: tuple[int, ...], what: str) -> None:
    if len(value) not in lengths or not _HEX.issuperset(value) or value.strip("0") == "":
        wanted = " or ".join(str(n) for n in lengths)
        raise SpanError("invalid", f"{what} must be {wanted} lowercase hex digits, not all zero")


@dataclass(frozen=True, slots=True)
class SpanSettings:
    """How much the span store may hold."""

    max_bytes: int = 64 * 1024 * 1024
    max_traces: int = 20_000
    max_spans_per_trace: int = 1_000


@dataclass(slots=True)
class Trace:
    """The spans of one trace, as they came."""

    trace_id: str
    received: float
    spans: list[StoredSpan] = field(default_factory=list)
    cost: int = 0

    def duration(self) -> int:
        """From the first span's start to the last one's end, in microseconds."""
        start = min(span.timestamp for span in self.spans)
        return max(span.timestamp + span.duration for span in self.spans) - start

    def summary(self) -> dict[str, object]:
        """One line of a trace list: root, services, start, duration, error."""
        ids = {span.id for span in self.spans}
        roots = [span for span in self.spans if span.parentId not in ids]
        root = min(roots or self.spans, key=lambda span: span.timestamp)
        start = min(span.timestamp for span in self.spans)
        return {
            "traceId": self.trace_id,
            "root": root.service,
            "name": root.name,
            "start": start,
            "duration": self.duration(),
            "spans": len(self.spans),
            "services": sorted({span.service for span in self.spans}),
            "error": any(span.error for span in self.spans),
            "status": root.tags.get("http.status_code", ""),
        }


class SpanStore:
    """Traces by id, oldest first, within `SpanSettings`."""

    def __init__(
        self, settings: SpanSettings | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings or SpanSettings()
        self.clock = clock
        self.traces: OrderedDict[str, Trace] = OrderedDict()
        self.bytes = 0
        self.accepted = 0
        self.evicted = 0
        self.refused: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<SpanStore {len(self.traces)} traces, ~{self.bytes // 1024} KiB>"

    def refuse(self, reason: str, spans: int = 1) -> None:
        """Count a refused batch (or its spans) by reason."""
        self.refused[reason] = self.refused.get(reason, 0) + spans

    def add(self, spans: Iterable[StoredSpan]) -> int:
        """Keep the spans; returns how many were kept (a trace at its span limit keeps no more)."""
        kept = 0
        now = self.clock()
        for span in spans:
            trace = self.traces.get(span.traceId)
            if trace is None:
                trace = self.traces[span.traceId] = Trace(span.traceId, now)
            if len(trace.spans) >= self.settings.max_spans_per_trace:
                self.refuse("trace_full")
                continue
            cost = span.cost()
            trace.spans.append(span)
            trace.cost += cost
            self.bytes += cost
            kept += 1
        self.accepted += kept
        self._bound()
        return kept

    def _bound(self) -> None:
        settings = self.settings
        while self.traces and (
            self.bytes > settings.max_bytes or len(self.traces) > settings.max_traces
        ):
            _, oldest = self.traces.popitem(last=False)
            self.bytes -= oldest.cost
            self.evicted += len(oldest.spans)

    def get(self, trace_id: str) -> Trace | None:
        """One trace (a 64-bit id is widened as the spans' are)."""
        return self.traces.get(trace_id.lower().rjust(32, "0"))

    def find(
        self,
        *,
        service: str | None = None,
        errors: bool = False,
        order: str = "recent",
        limit: int = 20,
    ) -> list[dict[str, object]]:
        """Summaries of traces that `service` took part in (`NAME.NAMESPACE`, or any), only
        failed ones with `errors`, newest first (`recent`) or longest first (`slowest`)."""
        found: list[Trace] = []
        for trace in reversed(self.traces.values()):
            if service is not None and all(span.service != service for span in trace.spans):
                continue
            if errors and not any(span.error for span in trace.spans):
                continue
            found.append(trace)
            if order == "recent" and len(found) >= limit:
                break
        if order == "slowest":
            found.sort(key=lambda trace: -trace.duration())
        return [trace.summary() for trace in found[:limit]]

    def status(self) -> dict[str, object]:
        """Figures about the store itself."""
        return {
            "traces": len(self.traces),
            "bytes": self.bytes,
            "maxBytes": self.settings.max_bytes,
            "maxTraces": self.settings.max_traces,
            "accepted": self.accepted,
            "evicted": self.evicted,
            "refused": dict(self.refused),
        }
