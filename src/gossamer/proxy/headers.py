"""Header handling on the hot path: hop-by-hop removal, forwarding and trace headers."""

from __future__ import annotations

import random
from binascii import hexlify

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


# What almost every Connection header says: nothing beyond the hop-by-hop names above.
_PLAIN_CONNECTION = frozenset(
    {b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade", b"TE", b"te"}
)


def extra_hop_by_hop(value: bytes) -> set[bytes] | None:
    """The names a Connection header adds to the hop-by-hop ones, or None (the usual case)."""
    if value in _PLAIN_CONNECTION:
        return None
    extra = connection_tokens(value) - HOP_BY_HOP
    extra.discard(b"close")
    return extra or None


def last_chunk(trailers: list[tuple[bytes, bytes]]) -> bytes:
    """The zero-size chunk that ends a chunked body, with its trailer fields."""
    return b"0\r\n" + b"".join([n + b": " + v + b"\r\n" for n, v in trailers]) + b"\r\n"


def trace_ids(
    traceparent: bytes | None, b3_trace: bytes | None, b3_span: bytes | None
) -> tuple[bytes, bytes, bytes | None, bytes]:
    """(trace id, the proxy's new span id, parent span id, flags), continuing any trace given.

    The proxy's own span becomes the parent of the upstream's: a new span id, the same trace
    id; a new trace is sampled.
    """
    if traceparent is not None:
        parts = traceparent.split(b"-")
        if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
            return parts[1], _random_hex(8), parts[2], parts[3]
    if b3_trace is not None and len(b3_trace) in (16, 32):
        return b3_trace.rjust(32, b"0"), _random_hex(8), b3_span, b"01"
    # One random number for both ids: 32 hex digits of trace id, then 16 of span id.
    ids = _random_hex(24)
    return ids[:32], ids[32:], None, b"01"


def _random_hex(size: int) -> bytes:
    # Twice as fast as formatting the number with %x.
    return hexlify(random.getrandbits(size * 8).to_bytes(size, "big"))


def trace_headers(
    traceparent: bytes | None, b3_trace: bytes | None, b3_span: bytes | None
) -> list[tuple[bytes, bytes]]:
    """W3C traceparent and B3 headers for the hop to the upstream (see `trace_ids`)."""
    trace_id, span, parent, flags = trace_ids(traceparent, b3_trace, b3_span)
    headers = [
        (b"traceparent", b"00-" + trace_id + b"-" + span + b"-" + flags),
        (b"x-b3-traceid", trace_id),
        (b"x-b3-spanid", span),
        (b"x-b3-sampled", b"1" if flags.endswith(b"1") else b"0"),
    ]
    if parent is not None:
        headers.append((b"x-b3-parentspanid", parent))
    return headers


def trace_lines(traceparent: bytes | None, b3_trace: bytes | None, b3_span: bytes | None) -> bytes:
    """`trace_headers` as header lines, in one piece."""
    if traceparent is None and b3_trace is None:
        # A new trace (no tracing header came): the usual case at the edge, and the fast one.
        ids = _random_hex(24)
        trace_id, span = ids[:32], ids[32:]
        return b"".join(
            (b"traceparent: 00-", trace_id, b"-", span, b"-01\r\nx-b3-traceid: ", trace_id,
             b"\r\nx-b3-spanid: ", span, b"\r\nx-b3-sampled: 1\r\n")
        )  # fmt: skip
    trace_id, span, parent, flags = trace_ids(traceparent, b3_trace, b3_span)
    sampled = b"1" if flags.endswith(b"1") else b"0"
    lines = (
        b"traceparent: 00-%b-%b-%b\r\nx-b3-traceid: %b\r\nx-b3-spanid: %b\r\nx-b3-sampled: %b\r\n"
        % (trace_id, span, flags, trace_id, span, sampled)
    )
    if parent is not None:
        lines += b"x-b3-parentspanid: " + parent + b"\r\n"
    return lines


TRACE_HEADER_NAMES = frozenset(
    {b"traceparent", b"x-b3-traceid", b"x-b3-spanid", b"x-b3-sampled", b"x-b3-parentspanid", b"b3"}
)
