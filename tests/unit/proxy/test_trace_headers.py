"""Trace headers continued or started, the sampling decision, and the bounded span buffer."""

from __future__ import annotations

import pytest

from gossamer.proxy.stats import ProxyStats
from gossamer.proxy.tracing import (
    SPANS_DROPPED,
    IncomingTrace,
    Span,
    SpanBuffer,
    continue_trace,
    incoming_trace,
    trace_lines,
)

TRACE = b"0af7651916cd43dd8448eb211c80319c"
PARENT = b"b7ad6b7169203331"


def parsed(lines: bytes) -> dict[bytes, bytes]:
    assert lines.endswith(b"\r\n")
    return dict(line.split(b": ", 1) for line in lines[:-2].split(b"\r\n"))  # type: ignore[misc]


def came_with(*headers: tuple[bytes, bytes]) -> IncomingTrace | None:
    return incoming_trace(list(headers))


@pytest.mark.parametrize(
    ("headers", "trace", "parent", "sampled"),
    [
        ((), None, None, b"1"),
        (((b"traceparent", b"00-" + TRACE + b"-" + PARENT + b"-01"),), TRACE, PARENT, b"1"),
        (((b"traceparent", b"00-" + TRACE + b"-" + PARENT + b"-00"),), TRACE, PARENT, b"0"),
        (((b"x-b3-traceid", TRACE[16:]), (b"x-b3-spanid", PARENT)), b"0" * 16 + TRACE[16:],
         PARENT, b"1"),
        (((b"x-b3-traceid", TRACE), (b"x-b3-spanid", PARENT), (b"x-b3-sampled", b"0")), TRACE,
         PARENT, b"0"),
        (((b"b3", TRACE + b"-" + PARENT + b"-1"),), TRACE, PARENT, b"1"),
        (((b"b3", TRACE + b"-" + PARENT + b"-0-" + b"1" * 16),), TRACE, PARENT, b"0"),
        (((b"b3", b"0"),), None, None, b"0"),
        (((b"traceparent", b"garbage"),), None, None, b"1"),
        (((b"traceparent", b"00-" + b"0" * 32 + b"-" + PARENT + b"-01"),), None, None, b"1"),
        (((b"traceparent", b"00-" + TRACE.upper() + b"-" + PARENT + b"-01"),), None, None, b"1"),
    ],
)  # fmt: skip
def test_the_callers_trace_is_continued_with_a_new_span(
    headers: tuple[tuple[bytes, bytes], ...],
    trace: bytes | None,
    parent: bytes | None,
    sampled: bytes,
) -> None:
    incoming = came_with(*headers)
    context = continue_trace(incoming, 100.0)
    for sent in (parsed(trace_lines(incoming)), parsed(context.lines()), dict(context.headers())):
        version, trace_id, span, flags = sent[b"traceparent"].split(b"-")
        assert version == b"00" and len(trace_id) == 32 and len(span) == 16
        assert trace is None or trace_id == trace
        assert span != parent and int(span, 16) != 0
        assert sent[b"x-b3-traceid"] == trace_id and sent[b"x-b3-spanid"] == span
        assert sent[b"x-b3-sampled"] == sampled and flags == b"0" + sampled
        assert sent.get(b"x-b3-parentspanid") == parent


def test_a_single_b3_header_is_forwarded_in_that_form() -> None:
    context = continue_trace(came_with((b"b3", TRACE + b"-" + PARENT + b"-1")), 100.0)
    single = parsed(context.lines())[b"b3"]
    assert single == TRACE + b"-" + context.span + b"-1-" + PARENT
    assert b"b3" not in parsed(continue_trace(None, 100.0).lines())


def test_new_traces_are_sampled_at_the_percentage_and_a_decision_that_came_holds() -> None:
    assert not any(continue_trace(None, 0.0).sampled for _ in range(1000))
    assert all(continue_trace(None, 100.0).sampled for _ in range(1000))
    share = sum(continue_trace(None, 25.0).sampled for _ in range(4000)) / 4000
    assert 0.2 < share < 0.3
    unsampled = came_with((b"traceparent", b"00-" + TRACE + b"-" + PARENT + b"-00"))
    assert not continue_trace(unsampled, 100.0).sampled
    sampled = came_with((b"x-b3-traceid", TRACE), (b"x-b3-spanid", PARENT), (b"x-b3-sampled", b"1"))
    assert continue_trace(sampled, 0.0).sampled
    # Ids without a decision: this proxy decides.
    undecided = came_with((b"x-b3-traceid", TRACE), (b"x-b3-spanid", PARENT))
    assert not continue_trace(undecided, 0.0).sampled


def test_each_new_trace_is_its_own() -> None:
    ids = {parsed(trace_lines(None))[b"x-b3-traceid"] for _ in range(1000)}
    assert len(ids) == 1000


def test_the_buffer_keeps_at_most_its_limit_and_counts_what_it_drops() -> None:
    stats = ProxyStats()
    buffer = SpanBuffer(stats, limit=3, batch_size=2)
    woken: list[int] = []
    buffer.wake = lambda: woken.append(len(buffer.spans))
    spans = [Span("CLIENT", continue_trace(None, 100.0), 1.0) for _ in range(5)]
    for span in spans:
        buffer.add(span)
    assert buffer.spans == spans[:3]
    assert woken == [2], "the exporter is woken once, when a batch is full"
    assert buffer.dropped == 2 and stats.counters[SPANS_DROPPED] == 2
    assert buffer.take(2) == spans[:2] and buffer.take(2) == spans[2:3] and buffer.take(2) == []
