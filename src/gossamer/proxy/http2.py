"""HTTP/2 requests and responses as HTTP/1.1 sees them (RFC 9113 sections 8.2 and 8.3), sans IO.

A request's decoded header list becomes the `RequestHead` an HTTP/1.1 connection would have
made: the pseudo-headers give the method, the target and the Host; cookies split over several
fields are joined again. Whatever HTTP/1.1 would read differently from HTTP/2 is refused, so
no request is smuggled across the translation: connection-specific fields, `te` other than
`trailers`, names in upper case or outside the token characters, CR, LF or NUL in a value,
pseudo-headers that are unknown, repeated, missing or after a regular field, a Content-Length
that is not one number, a Host that differs from `:authority`. The response side drops what
HTTP/2 has no use for and puts `:status` first.
"""

from __future__ import annotations

from typing import Final

from gossamer.proxy.http1 import RequestHead

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""What an HTTP/2 client sends first (RFC 9113 3.4); with prior knowledge, on plain TCP."""

# RFC 9113 8.2.2: fields that only make sense on one HTTP/1.1 connection.
CONNECTION_SPECIFIC: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
# Fields an HTTP/2 response must not carry (hop-by-hop in HTTP/1.1).
_RESPONSE_DROPPED: Final = CONNECTION_SPECIFIC | {b"te", b"trailer"}
_PSEUDO_REQUEST: Final = frozenset({b":method", b":scheme", b":authority", b":path"})
# RFC 9110 5.6.2 token characters, lower case (an upper-case name is refused on its own).
_TOKEN: Final = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
_UPPER: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_STATUS: Final = {code: str(code).encode() for code in range(100, 600)}


class FrameLengths:
    """Follows the frame headers of a client's byte stream, to refuse an oversized frame as its
    header arrives: h2 would buffer up to 16 MiB of a frame before it checks its length."""

    __slots__ = ("header", "left", "limit", "preface")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.preface = len(PREFACE)
        self.header = b""
        self.left = 0
        """Bytes of the current frame's payload still to come."""

    def feed(self, data: bytes) -> bool:
        """Take the next bytes; False when a frame announced a length over the limit."""
        at = 0
        size = len(data)
        if self.preface:
            at = min(self.preface, size)
            self.preface -= at
        while at < size:
            if self.left:
                step = min(self.left, size - at)
                self.left -= step
                at += step
                continue
            need = 9 - len(self.header)
            self.header += data[at : at + need]
            at += need
            if len(self.header) < 9:
                break
            length = int.from_bytes(self.header[:3], "big")
            self.header = b""
            if length > self.limit:
                return False
            self.left = length
        return True


class Refused:
    """Why a request's headers are not taken: the status to answer with (400, 431, 501)."""

    __slots__ = ("reason", "status")

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return f"<Refused {self.status} {self.reason}>"


class HeaderRules:
    """The listener's header limits and its underscore policy, as a request is translated."""

    __slots__ = ("drop_underscores", "max_header_bytes", "max_headers")

    def __init__(self, max_header_bytes: int, max_headers: int, drop_underscores: bool) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.drop_underscores = drop_underscores


def after_preface(data: bytes) -> bytes | None:
    """What follows the connection preface in `data`, the chunk in which it ended; None when
    `data` does not go on from a part of the preface.

    The parser that met the preface consumed the chunks before this one, each a part of it."""
    for start in range(len(PREFACE)):
        tail = PREFACE[start:]
        if data.startswith(tail):
            return data[len(tail) :]
    return None


class _Pseudo:
    """The request pseudo-headers of one header list, each at most once."""

    __slots__ = ("authority", "method", "path", "scheme")

    def __init__(self) -> None:
        self.method: bytes | None = None
        self.scheme: bytes | None = None
        self.authority: bytes | None = None
        self.path: bytes | None = None

    def take(self, name: bytes, value: bytes) -> str | None:
        """Keep one; why it is refused, if it is."""
        if name not in _PSEUDO_REQUEST:
            return f"unknown pseudo-header {_show(name)}"
        attribute = name[1:].decode()
        if getattr(self, attribute) is not None:
            return f"repeated {_show(name)}"
        problem = _value_problem(value)
        if problem is not None:
            return f"{problem} in {_show(name)}"
        setattr(self, attribute, value)
        return None


def translate_request(
    fields: list[tuple[bytes, bytes]], end_stream: bool, rules: HeaderRules, started: float
) -> tuple[RequestHead | Refused, int]:
    """The request head of a HEADERS block (`end_stream`: no body follows), or why it is
    refused; and how many fields were dropped for an underscore in their name."""
    pseudo = _Pseudo()
    host = length = None
    headers: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    regular = False
    size = dropped = 0
    for name, value in fields:
        size += len(name) + len(value) + 4
        if name[:1] == b":":
            problem = pseudo.take(name, value) if not regular else "pseudo-header after a field"
            if problem is not None:
                return Refused(400, problem), dropped
            continue
        regular = True
        problem = field_problem(name, value)
        if problem is not None:
            return Refused(400, problem), dropped
        if name == b"cookie":
            cookies.append(value)
        elif name == b"host":
            host = value
        elif name == b"content-length":
            if length is not None and value != length:
                return Refused(400, "conflicting content-length"), dropped
            length = value
        elif rules.drop_underscores and b"_" in name:
            dropped += 1
        else:
            headers.append((name, value))
    if size > rules.max_header_bytes or len(fields) > rules.max_headers:
        return Refused(431, "request headers too large"), dropped
    if cookies:
        # RFC 9113 8.2.3: one field again for HTTP/1.1.
        headers.append((b"cookie", b"; ".join(cookies)))
    return _head(pseudo, host, length, headers, end_stream=end_stream, started=started), dropped


def _head(
    pseudo: _Pseudo,
    host: bytes | None,
    length: bytes | None,
    headers: list[tuple[bytes, bytes]],
    *,
    end_stream: bool,
    started: float,
) -> RequestHead | Refused:
    # What the pseudo-headers, Host and Content-Length make of a list whose fields are valid.
    method, path, authority = pseudo.method, pseudo.path, pseudo.authority
    if method is None:
        return Refused(400, "missing :method")
    if method == b"CONNECT":
        return Refused(501, "CONNECT is not supported on this listener")
    if pseudo.scheme is None or not path:
        return Refused(400, "missing :scheme or :path")
    if path[:1] != b"/" and not (path == b"*" and method == b"OPTIONS"):
        return Refused(400, "bad :path")
    if authority is None:
        authority = host
    elif host is not None and host != authority:
        return Refused(400, "host differs from :authority")
    if not authority:
        return Refused(400, "missing :authority")
    if b"@" in authority:
        return Refused(400, "userinfo in :authority")
    content_length = 0
    if length is not None:
        if not length.isdigit() or len(length) > 18:
            return Refused(400, "bad content-length")
        content_length = int(length)
        if end_stream and content_length:
            return Refused(400, "content-length with no body")
        headers.append((b"content-length", length))
    head = RequestHead(method, path, "2", headers, True, started=started)
    head.host = authority
    head.hosts = 1
    head.content_length = content_length
    # A body of unknown length goes upstream chunked, as an HTTP/1.1 client would send it.
    head.chunked = length is None and not end_stream
    head.expect_continue = any(
        name == b"expect" and value.lower() == b"100-continue" for name, value in headers
    )
    return head


def field_problem(name: bytes, value: bytes) -> str | None:
    """Why a regular request field (or trailer) may not cross into HTTP/1.1; None if it may."""
    if not name:
        return "empty header name"
    if name.translate(None, _TOKEN):
        if name.translate(None, _UPPER) != name:
            return f"upper-case header name {_show(name)}"
        return f"bad header name {_show(name)}"
    if name in CONNECTION_SPECIFIC:
        return f"connection-specific header {_show(name)}"
    if name == b"te" and value.lower() != b"trailers":
        return "te other than trailers"
    problem = _value_problem(value)
    if problem is not None:
        return f"{problem} in {_show(name)}"
    return None


def trailers_problem(fields: list[tuple[bytes, bytes]]) -> str | None:
    """Why request trailers may not cross into HTTP/1.1; None if they may."""
    for name, value in fields:
        if name[:1] == b":":
            return "pseudo-header in trailers"
        problem = field_problem(name, value)
        if problem is not None:
            return problem
    return None


def _value_problem(value: bytes) -> str | None:
    # RFC 9113 8.2.1: CR, LF and NUL would split or end the field in HTTP/1.1.
    if b"\r" in value or b"\n" in value or b"\x00" in value:
        return "CR, LF or NUL"
    if value[:1] in (b" ", b"\t") or value[-1:] in (b" ", b"\t"):
        return "surrounding whitespace"
    return None


def _show(name: bytes) -> str:
    return repr(name[:40].decode("latin-1"))


# The response side.


def response_headers(status: int, fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`:status` and the fields (hop-by-hop ones already gone) with names in lower case."""
    out = [(b":status", _STATUS[status])]
    dropped = _RESPONSE_DROPPED
    for name, value in fields:
        lower = name.lower()
        if lower not in dropped:
            out.append((lower, value))
    return out


def trailer_fields(fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Response trailers for HTTP/2: lower-case names, nothing connection-specific."""
    dropped = _RESPONSE_DROPPED
    return [(name.lower(), value) for name, value in fields if name.lower() not in dropped]


def local_headers(
    status: int, reason: str, body: bytes, extra: list[tuple[bytes, bytes]] | None
) -> list[tuple[bytes, bytes]]:
    """The head of a reply made by the proxy, as `local_reply.render` makes it for HTTP/1.1."""
    fields = [(b":status", _STATUS[status]), (b"content-length", b"%d" % len(body))]
    if reason:
        fields.append((b"x-gossamer-reason", reason.encode("latin-1", "replace")))
    if body and not any(name == b"content-type" for name, _ in extra or ()):
        fields.append((b"content-type", b"text/plain; charset=utf-8"))
    for name, value in extra or ():
        fields.append((name.lower(), value))
    return fields
