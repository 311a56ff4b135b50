"""The trace headers of the request an app is handling, which its own calls carry on.

Two ContextVars hold "the request I am handling": this module's, with the headers to forward
verbatim (as Istio asks apps to do), and the event client's (`gossamer.events.tracecontext`),
so that events published while handling the request continue its trace. A ContextVar follows
each thread and each asyncio task on its own, which is exactly the scope of a request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from email.message import Message

from gossamer.events import tracecontext

# What a request's trace is carried in: W3C trace context, B3 (single and multi) and the
# request id that the access logs of every hop share. Lowercase, as HTTP/2 and ASGI write them.
FORWARDED = (
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-request-id",
)
FORWARDED_NAMES = frozenset(FORWARDED)
FORWARDED_BYTES = frozenset(name.encode() for name in FORWARDED)
# WSGI's environ keys for the same headers.
FORWARDED_ENVIRON = tuple((f"HTTP_{name.upper().replace('-', '_')}", name) for name in FORWARDED)

Headers = tuple[tuple[str, str], ...]

_incoming: ContextVar[Headers | None] = ContextVar("gossamer_incoming_trace", default=None)


def handle(headers: Headers | None) -> None:
    """Handle a request that came with these trace headers (None or empty: with none)."""
    headers = headers or None
    if headers is None and _incoming.get() is None:
        return  # the common case outside the mesh: nothing to set, nothing to clear
    _incoming.set(headers)
    trace = None
    if headers is not None:
        trace = tracecontext.TraceContext.parse(dict(headers))
    tracecontext.bind(trace)


def handle_event(trace: tracecontext.TraceContext | None) -> None:
    """Handle an event under its publisher's trace: calls made meanwhile carry it on."""
    if trace is None and _incoming.get() is None and tracecontext.current() is None:
        return
    _incoming.set(None)
    tracecontext.bind(trace)


def outgoing() -> Headers:
    """The trace headers an outgoing call carries: the incoming request's, else those of the
    trace being handled (an event, or `tracecontext.use`), else none."""
    headers = _incoming.get()
    if headers is not None:
        return headers
    trace = tracecontext.current()
    if trace is None:
        return ()
    return tuple(trace.headers().items())


def from_pairs(pairs: Iterable[tuple[str, str]]) -> Headers:
    """The trace headers among `(name, value)` pairs of any case (an http.server message)."""
    return tuple((key, value) for name, value in pairs if (key := name.lower()) in FORWARDED_NAMES)


def from_message(message: Message) -> Headers:
    """The trace headers of an http.server request (an email.message.Message).

    Names are looked at first: they are plain strings, where each value costs a parse."""
    if FORWARDED_NAMES.isdisjoint(name.lower() for name in message.keys()):  # noqa: SIM118
        return ()
    return from_pairs(message.items())


def from_asgi(pairs: Iterable[tuple[bytes, bytes]]) -> Headers:
    """The trace headers of an ASGI scope (names are lowercase bytes there)."""
    return tuple(
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in pairs
        if name in FORWARDED_BYTES
    )


def from_environ(environ: Mapping[str, object]) -> Headers:
    """The trace headers of a WSGI environ."""
    return tuple(
        (name, value)
        for key, name in FORWARDED_ENVIRON
        if isinstance(value := environ.get(key), str)
    )
