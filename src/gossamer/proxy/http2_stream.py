"""One HTTP/2 stream as the client of an exchange, and the writer of its response.

Flow control stands in for HTTP/1.1's pause and resume of a socket. The request body is
credited back to the client (WINDOW_UPDATE) only once the exchange has taken it and holds no
reason to pause, so a stream never has more in the proxy than its window. The response is sent
as far as the client's windows allow; what they do not allow waits here, and the upstream is
paused until it has gone, exactly as a client connection's full write buffer pauses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from h2.errors import ErrorCodes

from gossamer.proxy.codec import ClientSide, ResponseWriter
from gossamer.proxy.http2 import local_headers, response_headers, trailer_fields

if TYPE_CHECKING:
    from gossamer.proxy.exchange import Exchange
    from gossamer.proxy.http1 import RequestHead
    from gossamer.proxy.http2_connection import Http2Connection


class Http2Stream(ClientSide):
    """A request on an HTTP/2 connection: what its exchange sees as its client."""

    __slots__ = (
        "connection",
        "counted",
        "exchange",
        "paused_by",
        "pending",
        "pending_end",
        "request_done",
        "reset",
        "response_done",
        "started",
        "stream_id",
        "trailers",
        "unacked",
    )

    def __init__(self, connection: Http2Connection, stream_id: int, started: float) -> None:
        super().__init__(connection.handle.runtime)
        self.connection = connection
        self.stream_id = stream_id
        self.started = started
        self.peer = connection.peer
        self.peer_bytes = connection.peer_bytes
        self.principal = connection.principal
        self.secure = connection.secure
        self.write_paused = connection.write_paused
        self.exchange: Exchange | None = None
        self.counted = False
        """The request counts against the listener's max_concurrent_requests."""
        self.paused_by: set[str] = set()
        self.unacked = 0
        """Request body taken but not yet credited back to the client (reading is paused)."""
        self.pending = bytearray()
        """Response body the client's flow-control windows have no room for yet."""
        self.pending_end: list[tuple[bytes, bytes]] | None = None
        """The response's end (its trailers), once it came, until it is sent."""
        self.trailers: list[tuple[bytes, bytes]] = []
        self.request_done = False
        self.response_done = False
        self.reset = False
        """The stream was reset, by either side: nothing more is sent on it."""

    # Used by the exchange

    def response_writer(self, head: RequestHead, head_only: bool) -> ResponseWriter:
        """HTTP/2 framing for the response."""
        return Http2Writer(self, head_only)

    def begin_batch(self) -> bool:
        """Hold the connection's frames until end_batch."""
        return self.connection.begin_batch()

    def end_batch(self) -> None:
        """Send the frames the batch held."""
        self.connection.end_batch()

    def pause_reading(self, why: str = "body") -> None:
        """Stop crediting the request body back: the client runs out of window and waits."""
        self.paused_by.add(why)

    def resume_reading(self, why: str = "body") -> None:
        """Credit back what was held, once nothing holds the stream paused."""
        self.paused_by.discard(why)
        if not self.paused_by and self.unacked:
            unacked, self.unacked = self.unacked, 0
            self.connection.acknowledge(self, unacked)

    def exchange_done(self, exchange: Exchange, keep_alive: bool) -> None:
        """The exchange ended; the stream ends once its response has gone."""
        del keep_alive  # a stream carries one request whatever happens
        if self.counted:
            self.counted = False
            self.connection.handle.end_request()
        self.connection.settle(self)

    def abort(self) -> None:
        """A response cut short: reset the stream, not the connection."""
        self.connection.reset(self, ErrorCodes.INTERNAL_ERROR)

    # Used by the connection

    def take_body(self, data: bytes, flow_controlled: int) -> None:
        """Request body from a DATA frame: to the exchange, credited back unless it paused."""
        exchange = self.exchange
        if data and exchange is not None and not exchange.finished:
            # An empty DATA frame carries nothing (and an empty chunk would end a chunked body).
            exchange.request_body(data)
        if self.paused_by and exchange is not None and not exchange.finished:
            self.unacked += flow_controlled
        elif flow_controlled:
            self.connection.acknowledge(self, flow_controlled)

    def end_request(self) -> None:
        """The client ended its side of the stream (END_STREAM), after any trailers."""
        if self.request_done:
            return
        self.request_done = True
        exchange = self.exchange
        if exchange is not None:
            trailers, self.trailers = self.trailers, []
            exchange.request_end(trailers)

    def lost(self) -> None:
        """The stream or the connection is gone: the exchange gives up its upstream request."""
        self.reset = True
        self.pending.clear()
        self.pending_end = None
        exchange = self.exchange
        if exchange is not None and not exchange.finished:
            exchange.client_lost()

    # Sending the response

    def send(self, data: bytes, end: list[tuple[bytes, bytes]] | None) -> None:
        """Queue body bytes (and the end, with its trailers, when `end` is a list) and send what
        the windows allow."""
        if self.reset or self.response_done:
            return
        if data:
            self.pending += data
        if end is not None:
            self.pending_end = end
        self.flush()

    def flush(self) -> None:
        """Send what waits, as far as the flow-control windows allow."""
        if self.reset or self.response_done:
            return
        connection = self.connection
        if self.pending:
            connection.send_pending(self)
        if not self.pending and self.pending_end is not None:
            trailers, self.pending_end = self.pending_end, None
            self.response_done = True
            connection.end_response(self, trailers)
        self.update_write_pause()

    def update_write_pause(self) -> None:
        """Pause the upstream while response bytes wait here or the socket is full."""
        blocked = bool(self.pending) or self.connection.write_paused
        if blocked == self.write_paused:
            return
        self.write_paused = blocked
        exchange = self.exchange
        if exchange is None or exchange.finished:
            return
        if blocked:
            exchange.client_paused()
        else:
            exchange.client_resumed()


class Http2Writer(ResponseWriter):
    """A response in HTTP/2 frames: HEADERS, DATA as the windows allow, END_STREAM or trailers."""

    __slots__ = ("head_only", "stream")

    def __init__(self, stream: Http2Stream, head_only: bool) -> None:
        super().__init__()
        self.stream = stream
        self.head_only = head_only

    def framing_for(self, status: int, length_known: bool) -> tuple[bytes, bytes] | None:
        """HTTP/2 frames every body itself: no header is needed for it."""
        return None

    def send_head(
        self, status: int, reason: bytes, fields: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        """HEADERS with `:status` first; it ends the stream when no body can follow."""
        stream = self.stream
        if stream.reset:
            return
        bodiless = self.head_only or status in (204, 304)
        stream.connection.send_head(stream, response_headers(status, fields), bodiless)
        if bodiless:
            stream.response_done = True

    def send_body(self, data: bytes) -> None:
        """DATA frames, or bytes waiting for window."""
        if not self.head_only:
            self.stream.send(data, None)

    def send_end(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """END_STREAM on the last DATA frame, or on HEADERS with the trailers."""
        self.stream.send(b"", trailer_fields(trailers) if trailers else [])

    def send_local(
        self,
        status: int,
        reason: str,
        keep_alive: bool,
        body: bytes | None,
        extra: list[tuple[bytes, bytes]] | None,
    ) -> int:
        """A reply made by the proxy, as `local_reply.render` words it."""
        stream = self.stream
        if body is None:
            body = f"{reason}\n".encode() if reason else b""
        bodiless = self.head_only or status in (204, 304) or not body
        if stream.reset:
            return 0
        stream.connection.send_head(stream, local_headers(status, reason, body, extra), bodiless)
        if bodiless:
            stream.response_done = True
            return 0
        stream.send(body, [])
        return len(body)

    def send_continue(self) -> None:
        """An interim HEADERS with :status 100."""
        stream = self.stream
        if not stream.reset:
            stream.connection.send_head(stream, [(b":status", b"100")], False)
