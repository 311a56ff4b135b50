"""Header handling on the hot path: hop-by-hop removal and the names of trace headers."""

from __future__ import annotations

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


TRACE_HEADER_NAMES = frozenset(
    {b"traceparent", b"x-b3-traceid", b"x-b3-spanid", b"x-b3-sampled", b"x-b3-parentspanid", b"b3"}
)
