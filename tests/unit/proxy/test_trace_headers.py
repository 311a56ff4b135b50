"""The trace headers a proxy adds: a new trace, or the caller's continued with a new span."""

from __future__ import annotations

import pytest

from gossamer.proxy.headers import trace_headers, trace_lines

TRACE = b"0af7651916cd43dd8448eb211c80319c"
PARENT = b"b7ad6b7169203331"


def parsed(lines: bytes) -> dict[bytes, bytes]:
    assert lines.endswith(b"\r\n")
    return dict(line.split(b": ", 1) for line in lines[:-2].split(b"\r\n"))  # type: ignore[misc]


@pytest.mark.parametrize(
    ("traceparent", "b3_trace", "b3_span", "trace", "parent", "sampled"),
    [
        (None, None, None, None, None, b"1"),
        (b"00-" + TRACE + b"-" + PARENT + b"-01", None, None, TRACE, PARENT, b"1"),
        (b"00-" + TRACE + b"-" + PARENT + b"-00", None, None, TRACE, PARENT, b"0"),
        (None, TRACE[16:], PARENT, b"0" * 16 + TRACE[16:], PARENT, b"1"),
        (b"garbage", None, None, None, None, b"1"),
    ],
)
def test_lines_and_pairs_say_the_same(
    traceparent: bytes | None,
    b3_trace: bytes | None,
    b3_span: bytes | None,
    trace: bytes | None,
    parent: bytes | None,
    sampled: bytes,
) -> None:
    for headers in (
        parsed(trace_lines(traceparent, b3_trace, b3_span)),
        dict(trace_headers(traceparent, b3_trace, b3_span)),
    ):
        version, trace_id, span, flags = headers[b"traceparent"].split(b"-")
        assert version == b"00" and len(trace_id) == 32 and len(span) == 16
        assert trace is None or trace_id == trace
        assert span != parent and int(span, 16) != 0
        assert headers[b"x-b3-traceid"] == trace_id and headers[b"x-b3-spanid"] == span
        assert headers[b"x-b3-sampled"] == sampled and flags.endswith(sampled)
        assert headers.get(b"x-b3-parentspanid") == parent


def test_each_new_trace_is_its_own() -> None:
    ids = {parsed(trace_lines(None, None, None))[b"x-b3-traceid"] for _ in range(1000)}
    assert len(ids) == 1000
