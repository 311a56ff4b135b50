"""Replies the proxy makes itself: a status, a reason people can read, a flag for the access log."""

from __future__ import annotations

from http import HTTPStatus

# Envoy's response flags, so that people who know them read ours at once.
NO_ROUTE = "NR"
NO_HEALTHY_UPSTREAM = "UH"
UPSTREAM_CONNECT_FAILURE = "UF"
UPSTREAM_OVERFLOW = "UO"
UPSTREAM_TIMEOUT = "UT"
UPSTREAM_RESET = "UC"
UPSTREAM_RETRY_LIMIT = "URX"
UPSTREAM_PROTOCOL_ERROR = "UPE"
DOWNSTREAM_CONNECTION_TERMINATION = "DC"
DOWNSTREAM_PROTOCOL_ERROR = "DPE"
FAULT_INJECTED = "FI"
DELAY_INJECTED = "DI"
NO_CLUSTER = "NC"
LOAD_SHED = "LR"
DIRECT_RESPONSE = "DR"

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


def reason_phrase(status: int) -> bytes:
    """The standard phrase for a status code (empty when there is none)."""
    return _REASONS.get(status, b"")


def render(
    status: int,
    reason: str,
    *,
    close: bool,
    body: bytes | None = None,
    head_only: bool = False,
    extra: list[tuple[bytes, bytes]] | None = None,
    version: bytes = b"1.1",
) -> bytes:
    """A whole response: status line, `x-gossamer-reason`, and a short text body by default."""
    if body is None:
        body = f"{reason}\n".encode() if reason else b""
    lines = [
        b"HTTP/" + version + b" " + str(status).encode() + b" " + reason_phrase(status),
        b"content-length: " + str(len(body)).encode(),
    ]
    if reason:
        lines.append(b"x-gossamer-reason: " + reason.encode("latin-1", "replace"))
    if body and not any(name == b"content-type" for name, _ in extra or ()):
        lines.append(b"content-type: text/plain; charset=utf-8")
    for name, value in extra or ():
        lines.append(name + b": " + value)
    if close:
        lines.append(b"connection: close")
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    return head if head_only or status in (204, 304) else head + body
