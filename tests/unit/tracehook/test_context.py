"""The trace being handled: what a server takes from a request, and what a call carries on."""

from __future__ import annotations

import contextvars

from gossamer.events import tracecontext
from gossamer.tracehook import context

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def in_fresh_context() -> contextvars.Context:
    return contextvars.Context()


def test_only_trace_headers_are_taken_in_any_case() -> None:
    pairs = [
        ("Host", "frontend"),
        ("TraceParent", PARENT),
        ("X-B3-TraceId", "0af7651916cd43dd8448eb211c80319c"),
        ("X-Request-Id", "r-1"),
        ("Cookie", "secret"),
    ]
    assert context.from_pairs(pairs) == (
        ("traceparent", PARENT),
        ("x-b3-traceid", "0af7651916cd43dd8448eb211c80319c"),
        ("x-request-id", "r-1"),
    )
    assert context.from_asgi([(b"host", b"x"), (b"b3", b"abc-def-1"), (b"tracestate", b"k=v")]) == (
        ("b3", "abc-def-1"),
        ("tracestate", "k=v"),
    )
    environ = {"HTTP_HOST": "x", "HTTP_TRACEPARENT": PARENT, "HTTP_X_B3_SAMPLED": "1"}
    assert context.from_environ(environ) == (("traceparent", PARENT), ("x-b3-sampled", "1"))


def test_a_request_is_handled_under_its_headers_and_its_events_continue_its_trace() -> None:
    def handle() -> tuple[context.Headers, tracecontext.TraceContext | None, str]:
        context.handle((("traceparent", PARENT), ("x-request-id", "r-1")))
        published = tracecontext.outgoing(None)["traceparent"]
        return context.outgoing(), tracecontext.current(), published

    forwarded, trace, published = in_fresh_context().run(handle)
    assert forwarded == (("traceparent", PARENT), ("x-request-id", "r-1"))
    assert trace is not None and trace.span_id == "b7ad6b7169203331"
    # An event is a child span of the request's, in the same trace.
    assert published.startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert published != PARENT


def test_a_request_without_trace_headers_clears_what_the_last_one_set() -> None:
    def two_requests() -> tuple[context.Headers, tracecontext.TraceContext | None]:
        context.handle((("traceparent", PARENT),))
        context.handle(())
        return context.outgoing(), tracecontext.current()

    assert in_fresh_context().run(two_requests) == ((), None)
    assert in_fresh_context().run(context.outgoing) == ()


def test_an_event_is_handled_under_its_publishers_trace() -> None:
    event_trace = tracecontext.TraceContext.parse({"traceparent": PARENT})

    def consume() -> tuple[context.Headers, context.Headers]:
        context.handle((("x-request-id", "from-an-old-request"),))
        context.handle_event(event_trace)
        during = context.outgoing()
        context.handle_event(None)
        return during, context.outgoing()

    during, after = in_fresh_context().run(consume)
    assert during == (("traceparent", PARENT),)
    assert after == ()


def test_a_trace_used_by_hand_is_carried_on() -> None:
    def by_hand() -> context.Headers:
        with tracecontext.use(tracecontext.TraceContext.parse({"traceparent": PARENT})):
            return context.outgoing()

    assert in_fresh_context().run(by_hand) == (("traceparent", PARENT),)
