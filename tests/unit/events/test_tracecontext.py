"""W3C trace context: parsed strictly, continued by child spans, added to every publish."""

from gossamer.events.tracecontext import TraceContext, current, outgoing, use

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_traceparent_round_trips() -> None:
    context = TraceContext.parse({"traceparent": PARENT, "tracestate": "vendor=1"})
    assert context is not None
    assert context.headers() == {"traceparent": PARENT, "tracestate": "vendor=1"}


def test_malformed_or_all_zero_traceparents_are_ignored() -> None:
    for bad in ["", "00-xyz", "00-" + "0" * 32 + "-b7ad6b7169203331-01", PARENT + "-extra"]:
        assert TraceContext.parse({"traceparent": bad}) is None


def test_publishing_while_handling_an_event_continues_its_trace() -> None:
    parent = TraceContext.parse({"traceparent": PARENT})
    with use(parent):
        assert current() == parent
        child = TraceContext.parse(outgoing(None))
    assert child is not None and parent is not None
    assert child.trace_id == parent.trace_id
    assert child.span_id != parent.span_id
    assert current() is None


def test_without_a_current_trace_each_publish_starts_one() -> None:
    first = TraceContext.parse(outgoing({}))
    second = TraceContext.parse(outgoing({}))
    assert first is not None and second is not None
    assert first.trace_id != second.trace_id


def test_a_traceparent_given_by_the_caller_is_kept() -> None:
    assert outgoing({"traceparent": PARENT})["traceparent"] == PARENT
