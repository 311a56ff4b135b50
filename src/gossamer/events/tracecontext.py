"""W3C trace context (`traceparent`) for events: the publisher's span travels in the headers."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\Z")
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

# A ContextVar rather than state on an object: the current trace follows each asyncio task and
# thread on its own, which is exactly what "the trace I am handling now" means.
_current: ContextVar[TraceContext | None] = ContextVar("gossamer_trace", default=None)


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A position in a trace: the trace, the current span, and whether it is sampled."""

    trace_id: str
    span_id: str
    sampled: bool = True
    state: str | None = None

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> TraceContext | None:
        """The context in `traceparent` (and `tracestate`), or None if absent or malformed."""
        match = _TRACEPARENT.match(headers.get(TRACEPARENT, "").strip().lower())
        if match is None or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
            return None
        sampled = int(match.group(3), 16) & 1 == 1
        return cls(match.group(1), match.group(2), sampled, headers.get(TRACESTATE))

    @classmethod
    def root(cls) -> TraceContext:
        """The start of a new trace."""
        return cls(f"{random.getrandbits(128) or 1:032x}", _span_id())

    def child(self) -> TraceContext:
        """A new span in the same trace, as when publishing an event."""
        return TraceContext(self.trace_id, _span_id(), self.sampled, self.state)

    def headers(self) -> dict[str, str]:
        """`traceparent` (and `tracestate` when there is one)."""
        flags = "01" if self.sampled else "00"
        out = {TRACEPARENT: f"00-{self.trace_id}-{self.span_id}-{flags}"}
        if self.state:
            out[TRACESTATE] = self.state
        return out


def _span_id() -> str:
    # `random`, not os.urandom: ids must be unique, not secret, and urandom is slow on some VMs.
    return f"{random.getrandbits(64) or 1:016x}"


def current() -> TraceContext | None:
    """The trace being handled in this task or thread, if any."""
    return _current.get()


def bind(context: TraceContext | None) -> None:
    """Handle work under a trace from here on, in this thread or task: a server sets the trace of
    the request it handles when the request arrives (a task's context ends with the task)."""
    _current.set(context)


@contextmanager
def use(context: TraceContext | None) -> Iterator[None]:
    """Handle work under a trace: events published inside continue it."""
    token = _current.set(context)
    try:
        yield
    finally:
        _current.reset(token)


def outgoing(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Headers for a new event: a child span of the current trace (or a new trace) unless the
    caller gave a `traceparent` of their own."""
    out = dict(headers or {})
    if TRACEPARENT not in out:
        parent = current()
        out.update((parent.child() if parent else TraceContext.root()).headers())
    return out
