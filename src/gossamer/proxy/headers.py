"""Header handling on the hot path: hop-by-hop removal, forwarding and trace headers."""

from __future__ import annotations

import random

# RFC 9110 7.6.1 connection-specific fields, plus those proxies have long treated so.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)


def connection_tokens(value: bytes) -> set[bytes]:
    """Header names a Connection header lists, lowercase."""
    return {token.strip().lower() for token in value.split(b",") if token.strip()}


def new_trace_id() -> bytes:
    """32 hex digits."""
    return b"%032x" % random.getrandbits(128)


def new_span_id() -> bytes:
    """16 hex digits."""
    return b"%016x" % random.getrandbits(64)


def trace_headers(
    traceparent: bytes | None, b3_trace: bytes | None, b3_span: bytes | None
) -> list[tuple[bytes, bytes]]:
    """W3C traceparent and B3 headers for the hop to the upstream, continuing any trace given.

    The proxy's own span becomes the parent: a new span id, the same trace id, sampled.
    """
    trace_id: bytes | None = None
    parent: bytes | None = None
    flags = b"01"
    if traceparent is not None:
        parts = traceparent.split(b"-")
        if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
            trace_id, parent, flags = parts[1], parts[2], parts[3]
    if trace_id is None and b3_trace is not None and len(b3_trace) in (16, 32):
        trace_id = b3_trace.rjust(32, b"0")
        parent = b3_span
    if trace_id is None:
        trace_id = new_trace_id()
    span = new_span_id()
    headers = [
        (b"traceparent", b"00-" + trace_id + b"-" + span + b"-" + flags),
        (b"x-b3-traceid", trace_id),
        (b"x-b3-spanid", span),
        (b"x-b3-sampled", b"1" if flags.endswith(b"1") else b"0"),
    ]
    if parent is not None:
        headers.append((b"x-b3-parentspanid", parent))
    return headers


TRACE_HEADER_NAMES = frozenset(
    {b"traceparent", b"x-b3-traceid", b"x-b3-spanid", b"x-b3-sampled", b"x-b3-parentspanid", b"b3"}
)
