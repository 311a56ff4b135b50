"""What the trace hook costs an app: per request on http.server, per outgoing call.

Usage: python bench/tracehook_bench.py

Times, in this process and without sockets, the hook's work at each point it runs (the best of
5 rounds): the http.server patch reading a parsed request head with and without trace headers,
the client patch's check when no trace is being handled, and the context of its own that each
request runs in. docs/observability.md, "Traces without touching the app", quotes the figures.
"""

from __future__ import annotations

import contextvars
import http.client
import io
import timeit
from collections.abc import Callable
from typing import Any

from gossamer.tracehook import context
from gossamer.tracehook.server import _parse_request

PLAIN = b"Host: frontend\r\nUser-Agent: curl/8\r\nAccept: */*\r\nContent-Length: 0\r\n\r\n"
TRACED = PLAIN[:-2] + (
    b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
    b"x-b3-traceid: 0af7651916cd43dd8448eb211c80319c\r\nx-b3-spanid: b7ad6b7169203331\r\n"
    b"x-b3-parentspanid: 00f067aa0ba902b7\r\nx-b3-sampled: 1\r\n"
    b"x-request-id: 6c1d1c3e-4bb0-4a3b\r\n\r\n"
)


class _ParsedRequest:
    """What BaseHTTPRequestHandler.parse_request leaves for the patch to read."""

    def __init__(self, head: bytes) -> None:
        self.headers = http.client.parse_headers(io.BytesIO(head))


def microseconds(work: Callable[[], Any], number: int) -> float:
    """The best of 5 rounds, each in a fresh context (as each request is)."""
    run = contextvars.Context().run
    return min(timeit.repeat(lambda: run(work), number=number, repeat=5)) / number * 1e6


def main() -> None:
    parse = _parse_request(lambda handler: True)
    plain, traced = _ParsedRequest(PLAIN), _ParsedRequest(TRACED)
    rows = [
        ("http.server request, 4 headers, no trace", lambda: parse(plain), 200_000),
        ("http.server request, traceparent + B3 + x-request-id", lambda: parse(traced), 200_000),
        ("outgoing call while no trace is handled", context.outgoing, 1_000_000),
        (
            "a request's own context (copy_context().run)",
            lambda: contextvars.copy_context().run(lambda: None),
            1_000_000,
        ),
    ]
    for label, work, number in rows:
        print(f"{label:55s} {microseconds(work, number):6.2f} us")


if __name__ == "__main__":
    main()
