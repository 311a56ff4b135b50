"""The HTTP/1.1 codec: header lists and body chunks in, the bytes of HTTP/1.1 out.

The exchange decides what a request and its response say (header lists, body chunks, a local
reply's status and reason); this module alone knows how HTTP/1.1 puts them on the wire: request
and status lines, `name: value` lines, chunked framing and its trailers, Connection headers and
keep-alive, 100-continue, and the hop-by-hop fields a response drops. Parsing stays with the
connections (`downstream`, `upstream`), which hand the exchange a `RequestHead` and header lists.
HTTP/2 is another codec with the same calls (`codec.ResponseWriter`, `http2_stream`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from gossamer.proxy import local_reply as lr
from gossamer.proxy.codec import ResponseWriter
from gossamer.proxy.headers import HOP_BY_HOP, extra_hop_by_hop, last_chunk

if TYPE_CHECKING:
    from gossamer.proxy.downstream import DownstreamConnection

# How a response's body is delimited for the client.
FRAMING_AS_IS: Final = 0
"""Content-Length, or no body at all (HEAD, 204, 304): the bytes pass unchanged."""
FRAMING_CHUNKED: Final = 1
"""No length, an HTTP/1.1 client: the proxy frames the body in chunks."""
FRAMING_UNTIL_CLOSE: Final = 2
"""No length, an HTTP/1.0 client: the body ends when the connection closes."""

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
CHUNKED: Final = (b"transfer-encoding", b"chunked")

_STATUS_LINE = {code: b"HTTP/1.1 %d " % code for code in range(100, 600)}
# A response header whose name has none of these lengths is neither hop-by-hop nor
# Content-Length: most are passed on without lowercasing their names.
_HOP_BY_HOP_LENGTHS = frozenset(len(name) for name in HOP_BY_HOP) | {len(b"content-length")}


class RequestHead:
    """A parsed request line and headers, as the downstream parser produced them (header names
    in lower case)."""

    __slots__ = (
        "chunked",
        "content_length",
        "expect_continue",
        "headers",
        "host",
        "hosts",
        "keep_alive",
        "method",
        "started",
        "target",
        "version",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        version: str,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        *,
        started: float = 0.0,
    ) -> None:
        self.started = started
        """When the request's first byte came (monotonic clock), if the parser saw it."""
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.chunked = False
        self.content_length = 0
        self.expect_continue = False
        self.host: bytes | None = None
        """The Host header's value (the downstream connection finds it)."""
        self.hosts = 0
        """How many Host headers came (more than one is refused)."""

    def bodiless(self) -> bool:
        """A request without a body is complete with its head."""
        return not (self.chunked or self.content_length)


# The request side: what goes upstream.


def append_fields(lines: list[bytes], fields: list[tuple[bytes, bytes]]) -> None:
    """`name: value` lines, in pieces for one join at the end."""
    for name, value in fields:
        lines.append(name)
        lines.append(b": ")
        lines.append(value)
        lines.append(b"\r\n")


def request_head(method: bytes, target: bytes, fields: list[tuple[bytes, bytes]]) -> bytes:
    """A whole request head from its method, target and header list."""
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    append_fields(lines, fields)
    lines.append(b"\r\n")
    return b"".join(lines)


def request_line(method: bytes, target: bytes) -> list[bytes]:
    """A request head's first line, as the first pieces of a head built by parts."""
    return [method, b" ", target, b" HTTP/1.1\r\n"]


def body_chunk(data: bytes, chunked: bool) -> bytes:
    """Body bytes in the framing the upstream expects (the client's: chunked or by length)."""
    return b"%x\r\n%b\r\n" % (len(data), data) if chunked else data


def body_end(trailers: list[tuple[bytes, bytes]]) -> bytes:
    """The end of a chunked body, with its trailers."""
    return last_chunk(trailers)


# The response side: what goes back to the client.


def response_fields(
    headers: list[tuple[bytes, bytes]],
) -> tuple[list[tuple[bytes, bytes]], bool]:
    """The upstream's response headers without hop-by-hop ones (and those its Connection header
    names), and whether a Content-Length came."""
    drop = HOP_BY_HOP
    out: list[tuple[bytes, bytes]] = []
    length_known = False
    lengths = _HOP_BY_HOP_LENGTHS
    for pair in headers:
        name = pair[0]
        if len(name) in lengths:
            lower = name.lower()
            if lower in drop:
                if lower == b"connection":
                    extra = extra_hop_by_hop(pair[1])
                    if extra is not None:
                        drop = drop | extra
                        lengths = frozenset(len(n) for n in drop) | {len(b"content-length")}
                        out = [(n, v) for n, v in out if n.lower() not in drop]
                continue
            if lower == b"content-length":
                length_known = True
        out.append(pair)
    return out, length_known


class Http1Writer(ResponseWriter):
    """One response to one HTTP/1.x client: how its body is framed, and whether the connection
    closes after it."""

    __slots__ = ("client", "framing", "head_only", "version")

    def __init__(self, client: DownstreamConnection, version: str, head_only: bool) -> None:
        self.client = client
        self.version = version
        self.head_only = head_only
        """A response to HEAD: a head that describes a body, and no body."""
        self.framing = FRAMING_AS_IS
        self.closes = False

    def framing_for(self, status: int, length_known: bool) -> tuple[bytes, bytes] | None:
        """Choose the body's framing; the header it needs, if any, to add to the head."""
        if self.head_only or status in (204, 304) or length_known:
            self.framing = FRAMING_AS_IS
            return None
        if self.version == "1.1":
            self.framing = FRAMING_CHUNKED
            return CHUNKED
        self.framing = FRAMING_UNTIL_CLOSE
        self.closes = True
        return None

    def send_head(
        self, status: int, reason: bytes, fields: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        """The status line and headers, with the Connection header that the framing and
        `keep_alive` (the exchange may carry on with another request) call for."""
        if self.closes or not keep_alive:
            fields.append((b"connection", b"close"))
            self.closes = True
        elif self.version == "1.0":
            fields.append((b"connection", b"keep-alive"))
        lines = [_STATUS_LINE[status], reason, b"\r\n"]
        append_fields(lines, fields)
        lines.append(b"\r\n")
        self.client.write(b"".join(lines))

    def send_body(self, data: bytes) -> None:
        """Part of the body, framed."""
        if self.framing == FRAMING_CHUNKED:
            self.client.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.client.write(data)

    def send_end(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """The last chunk and its trailers, for a body the proxy frames in chunks."""
        if self.framing == FRAMING_CHUNKED:
            self.client.write(last_chunk(trailers))

    def send_local(
        self,
        status: int,
        reason: str,
        keep_alive: bool,
        body: bytes | None,
        extra: list[tuple[bytes, bytes]] | None,
    ) -> int:
        """A whole reply made by the proxy (see `local_reply.render`)."""
        self.closes = not keep_alive
        data = lr.render(
            status, reason, close=not keep_alive, body=body, head_only=self.head_only,
            extra=extra,
        )  # fmt: skip
        self.client.write(data)
        return len(data)

    def send_continue(self) -> None:
        """The 100 Continue an HTTP/1.1 client that sent `Expect: 100-continue` waits for."""
        if self.version == "1.1":
            self.client.write(CONTINUE)
