"""A client connection: parses requests strictly, runs them in order, enforces the limits."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Final, cast

import httptools

from gossamer.proxy import local_reply as lr
from gossamer.proxy.apiproduct import ProductExchange
from gossamer.proxy.codec import ClientSide, ResponseWriter
from gossamer.proxy.exchange import Exchange
from gossamer.proxy.http1 import Http1Writer, RequestHead
from gossamer.proxy.http2 import PREFACE, after_preface
from gossamer.proxy.rejection import QueuedRejection
from gossamer.proxy.tunnel import UpgradeExchange
from gossamer.security.spiffe import peer_spiffe_id

if TYPE_CHECKING:
    from gossamer.proxy.server import ListenerHandle

log = logging.getLogger(__name__)

# "_" as a byte value: `b"_" in name` tries its operand as an integer first, and would pay for
# the TypeError on every header.
_UNDERSCORE: Final = 0x5F


class RequestRejectedError(Exception):
    """Raised from a parser callback to refuse a request with a status (431, 414, 400)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _Inert:
    """A parser's protocol with no callbacks: what closed connections keep."""


_CLOSED_PARSER: Final = httptools.HttpRequestParser(_Inert())


class DownstreamConnection(ClientSide):
    """One client connection; requests are parsed as they come and answered in order."""

    __slots__ = (
        "batch",
        "current",
        "handle",
        "header_bytes",
        "headers",
        "in_trailers",
        "incoming",
        "last_activity",
        "parser",
        "paused_by",
        "queue",
        "request_started",
        "starting",
        "then",
        "transport",
        "url",
    )

    def __init__(self, handle: ListenerHandle) -> None:
        super().__init__(handle.runtime)
        self.handle = handle
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.in_trailers = False
        self.current: Exchange | None = None
        self.incoming: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self.paused_by: set[str] = set()
        self.batch: list[bytes] | None = None
        self.request_started = 0.0
        self.last_activity = time.monotonic()
        # While _next starts a queued exchange, and what to do after one answered at once.
        self.starting = False
        self.then: bool | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Accept, or refuse with a 503 when the listener is at max_connections."""
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        self.peer_bytes = self.peer.encode()
        if self.handle.config.mtls is not None and not self._mesh_peer(transport):
            return
        if self.handle.certificates is not None and _alpn(transport) == "h2":
            self._switch_to_http2(transport, b"")
            return
        high = self.runtime.limits.max_request_body_buffer
        transport.set_write_buffer_limits(high=high, low=high // 2)
        if not self.handle.admit(self):
            self.runtime.stats.incr("gossamer_downstream_connections_refused_total")
            transport.write(lr.render(503, "overloaded: too many connections", close=True))
            transport.close()

    def _mesh_peer(self, transport: asyncio.Transport) -> bool:
        """Learn who a sidecar peer is; refuse one whose SPIFFE id is not of this mesh."""
        if transport.get_extra_info("sslcontext") is None:
            return True
        self.secure = True
        self.principal = peer_spiffe_id(transport.get_extra_info("peercert"))
        self.runtime.stats.incr("gossamer_mtls_connections_total")
        mesh_tls = self.handle.proxy.mesh_tls
        if mesh_tls is None or not mesh_tls.trusts(self.principal):
            self.runtime.stats.incr("gossamer_mtls_refused_total")
            log.info("refused mTLS peer %r from %s", self.principal, self.peer)
            transport.abort()
            return False
        return True

    def data_received(self, data: bytes) -> None:
        """Feed the parser; a malformed request gets a 400 and the connection closes."""
        # No clock read here: a request's head is timed from its first byte (on_message_begin),
        # and idleness from the end of the last response (_next).
        try:
            self.parser.feed_data(data)
        except RequestRejectedError as rejected:
            self._reject(rejected.status, rejected.reason)
        except httptools.HttpParserUpgrade as upgrade:
            self._switching(data[upgrade.args[0] :])
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            if isinstance(cause, RequestRejectedError):
                self._reject(cause.status, cause.reason)
            else:
                # A bug of ours: say so, keep serving everyone else, never crash the loop.
                log.error("internal error handling a request", exc_info=cause)
                self.runtime.stats.incr("gossamer_internal_errors_total")
                self._reject(500, "internal proxy error")
        except httptools.HttpParserError as error:
            if self.parser.get_method() == b"PRI" and self._http2_prior_knowledge(data):
                return
            self._reject(400, f"malformed request: {_describe(error)}")

    def connection_lost(self, exc: Exception | None) -> None:
        """Abandon whatever was in flight."""
        self.transport = None
        # The parser holds this connection's callbacks: let go of it (see upstream.py).
        self.parser = _CLOSED_PARSER
        self.handle.forget(self)
        if self.current is not None:
            self.current.client_lost()
        for waiting in self.queue:
            waiting.finished = True
        self.queue.clear()

    def pause_writing(self) -> None:
        """The client reads slowly: slow the upstream down."""
        self.write_paused = True
        if self.current is not None:
            self.current.client_paused()

    def resume_writing(self) -> None:
        """The client caught up."""
        self.write_paused = False
        if self.current is not None:
            self.current.client_resumed()

    # httptools callbacks

    def on_message_begin(self) -> None:
        """A new request starts: its header bytes are counted and timed from here."""
        # Each request runs with the listener's newest snapshot, even on an older connection.
        self.runtime = self.handle.runtime
        self.url = b""
        self.headers = []
        self.header_bytes = 0
        self.in_trailers = False
        self.request_started = time.monotonic()

    def on_url(self, url: bytes) -> None:
        """The request target, possibly in pieces."""
        self.url += url
        if len(self.url) > self.runtime.limits.max_request_line:
            raise RequestRejectedError(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        """A header (or a trailer); counted against the header limits."""
        size = self.header_bytes + len(name) + len(value) + 4
        self.header_bytes = size
        headers = self.headers
        runtime = self.runtime
        if _UNDERSCORE in name and runtime.drop_underscore_headers:
            # Dropped before anything reads them, as nginx does: a backend that reads "_" as "-"
            # would take `content_length` for a second Content-Length.
            runtime.stats.incr("gossamer_dropped_headers_with_underscores_total")
        else:
            # Names lowercased once, here: everything after compares and forwards them as they are.
            headers.append((name.lower(), value))
        limits = runtime.limits
        if size > limits.max_header_bytes or len(headers) > limits.max_headers:
            raise RequestRejectedError(431, "request headers too large")

    def on_headers_complete(self) -> None:
        """Make the exchange; start it now, or queue it behind a pipelined one."""
        parser = self.parser
        keep_alive = parser.should_keep_alive()
        head = RequestHead(
            parser.get_method(),
            self.url,
            "1.1",
            self.headers,
            keep_alive,
            started=self.request_started,
        )
        self.request_started = 0.0
        if _framing(head) or not keep_alive:
            # httptools formats the version anew each time it is asked (a tenth of a microsecond).
            # A request that keeps its connection open without a Connection header is HTTP/1.1:
            # HTTP/1.0 (or 2.0 in a request line) keeps it open only when a header asks.
            head.version = parser.get_http_version()
        self.headers = []
        self.header_bytes = 0
        self.in_trailers = True
        if parser.should_upgrade():
            exchange = self._upgrade(head)
        elif self.runtime.products is not None:
            exchange = ProductExchange(self, head)
        else:
            exchange = Exchange(self, head)
        self.incoming = exchange
        if self.current is None:
            if not self.handle.begin_request():
                self._shed(exchange)
                return
            self.current = exchange
            exchange.start()
        else:
            self.queue.append(exchange)
            self.pause_reading("pipeline")

    def on_body(self, body: bytes) -> None:
        """Request body for the request being parsed."""
        incoming = self.incoming
        if incoming is not None:
            incoming.request_body(body)

    def on_message_complete(self) -> None:
        """The request being parsed is complete."""
        incoming = self.incoming
        self.incoming = None
        self.in_trailers = False
        if incoming is not None:
            trailers = self.headers
            self.headers = []
            incoming.request_end(trailers)
            if incoming.finished and incoming is self.current:
                self._next(incoming.keep_alive)

    # Used by exchanges

    def response_writer(self, head: RequestHead, head_only: bool) -> ResponseWriter:
        """HTTP/1.x framing for the response to `head`."""
        return Http1Writer(self, head.version, head_only)

    def write(self, data: bytes) -> None:
        """Send to the client, unless it is gone; inside a batch, at the batch's end."""
        if self.batch is not None:
            self.batch.append(data)
        elif self.transport is not None:
            self.transport.write(data)

    def begin_batch(self) -> bool:
        """Collect writes until end_batch: one send for a response's head and body."""
        if self.batch is not None:
            return False
        self.batch = []
        return True

    def end_batch(self) -> None:
        """Send what the batch collected."""
        batch = self.batch
        self.batch = None
        if batch and self.transport is not None:
            self.transport.write(batch[0] if len(batch) == 1 else b"".join(batch))

    def pause_reading(self, why: str = "body") -> None:
        """Stop reading the client until every reason to pause is gone."""
        if not self.paused_by and self.transport is not None:
            self.transport.pause_reading()
        self.paused_by.add(why)

    def resume_reading(self, why: str = "body") -> None:
        """Read again once nothing holds the connection paused."""
        self.paused_by.discard(why)
        if not self.paused_by and self.transport is not None:
            self.transport.resume_reading()

    def exchange_done(self, exchange: Exchange, keep_alive: bool) -> None:
        """The current response is complete: start the next queued request or close."""
        if exchange is not self.current:
            return
        self.handle.end_request()
        if exchange.request_done or not keep_alive:
            if self.starting:
                # Answered inside _next's start(): its loop goes on, not a deeper stack.
                self.then = keep_alive
            else:
                self._next(keep_alive)

    def abort(self) -> None:
        """Close at once, without finishing any response."""
        self.batch = None
        if self.transport is not None:
            self.transport.abort()

    # Internals

    def _http2_prior_knowledge(self, data: bytes) -> bool:
        """The connection opened with HTTP/2's preface (h2c with prior knowledge): hand it, and
        the frames after the preface, to an HTTP/2 connection. False if it was no preface."""
        rest = after_preface(data)
        transport = self.transport
        if rest is None or transport is None or self.current is not None or self.queue:
            return False
        # h2 reads the preface itself.
        self._switch_to_http2(transport, PREFACE + rest)
        return True

    def _switch_to_http2(self, transport: asyncio.Transport, received: bytes) -> None:
        # Imported on first use: a proxy whose clients speak only HTTP/1.1 never loads h2
        # (1.5 MB of resident memory).
        from gossamer.proxy.http2_connection import Http2Connection  # noqa: PLC0415

        # The new protocol takes this connection's place at the listener and on the transport.
        self.handle.forget(self)
        self.parser = _CLOSED_PARSER
        connection = Http2Connection(self.handle, self.peer, self.principal, self.secure)
        transport.set_protocol(connection)
        self.transport = None
        connection.connection_made(transport)
        if received and connection.transport is not None:
            connection.data_received(received)

    def _upgrade(self, head: RequestHead) -> Exchange:
        if head.method == b"CONNECT":
            raise RequestRejectedError(501, "CONNECT is not supported on this listener")
        if head.chunked or head.content_length:
            # The parser hands what follows an upgrade's head to the tunnel, body or not.
            raise RequestRejectedError(400, "an upgrade request may not have a body")
        return UpgradeExchange(self, head)

    def _shed(self, exchange: Exchange) -> bool:
        """Refuse with a 503; False when that answer said close, and the connection closes."""
        exchange.local(503, "overloaded: too many concurrent requests", lr.LOAD_SHED)
        if exchange.keep_alive:
            return True
        self._close_after_write()
        return False

    def _switching(self, rest: bytes) -> None:
        # The parser stops after an upgrade's head: hold the client until the upstream answers.
        self.pause_reading("upgrade")
        exchange = self.queue[-1] if self.queue else self.current
        if isinstance(exchange, UpgradeExchange):
            exchange.early_data(rest)

    def _next(self, keep_alive: bool) -> None:
        while True:
            self.current = None
            self.last_activity = time.monotonic()
            if not keep_alive or self.runtime.draining:
                self._close_after_write()
                return
            if not self.queue:
                if self.paused_by:
                    self.resume_reading("pipeline")
                return
            exchange = self.queue.popleft()
            if not self.handle.begin_request():
                keep_alive = self._shed(exchange)
                continue
            self.current = exchange
            self.starting = True
            try:
                exchange.start()
            finally:
                self.starting = False
            then = self.then
            if then is None:
                # Under way, or answered with its request still arriving (the end goes on).
                if not self.queue:
                    self.resume_reading("pipeline")
                return
            self.then = None
            keep_alive = then

    def _reject(self, status: int, reason: str) -> None:
        self.runtime.stats.incr("gossamer_downstream_rejected_requests_total")
        current = self.current
        if current is not None and current is not self.incoming and not current.finished:
            self._reject_in_turn(status, reason)
            return
        if current is not None and not current.finished and not current.response_started:
            current.refuse(status, reason)
        elif current is None and self.transport is not None:
            self.transport.write(lr.render(status, reason, close=True))
        self._close_after_write()

    def _reject_in_turn(self, status: int, reason: str) -> None:
        # The broken request is pipelined behind one still being answered: that one finishes
        # as usual, and the refusal takes the broken request's place in the queue.
        broken = self.incoming
        if broken is not None and self.queue and self.queue[-1] is broken:
            self.queue.pop()
        self.incoming = None
        self.request_started = 0.0
        self.queue.append(QueuedRejection(self, status, reason))
        self.pause_reading("rejected")

    def _close_after_write(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if self.batch:
                self.end_batch()
            transport.close()

    def check_timeouts(self, now: float) -> None:
        """Called by the listener's sweep: slow headers or a request body that takes longer than
        request_timeout get a 408, idle connections close."""
        limits = self.runtime.limits
        incoming = self.incoming
        if self.request_started and now - self.request_started > limits.header_timeout:
            self._reject(408, "request headers timeout")
        elif (
            incoming is not None
            and not incoming.request_done
            and now - incoming.started > limits.request_timeout
        ):
            self._reject(408, "request timeout")
        elif (
            self.current is None
            and not self.queue
            and now - self.last_activity > limits.idle_timeout
        ):
            self._close_after_write()

    def drain(self) -> None:
        """Close once idle; a request in flight finishes first (with connection: close)."""
        if self.current is None and not self.queue and not self.request_started:
            self._close_after_write()


def _alpn(transport: asyncio.Transport) -> str | None:
    """The protocol the TLS handshake chose by ALPN, if any."""
    ssl_object = transport.get_extra_info("ssl_object")
    return None if ssl_object is None else ssl_object.selected_alpn_protocol()


def _framing(head: RequestHead) -> bool:
    # One pass for what the exchange must know of the headers before routing; whether a
    # Connection header came.
    connection = False
    for name, value in head.headers:
        size = len(name)
        if size == 4:
            if name == b"host":
                head.hosts += 1
                head.host = value
        elif size == 17:
            if name == b"transfer-encoding":
                head.chunked = True
        elif size == 14:
            if name == b"content-length":
                head.content_length = int(value)
        elif size == 6 and name == b"expect":
            head.expect_continue = value.lower() == b"100-continue"
        elif size == 10 and name == b"connection":
            connection = True
    return connection


def _describe(error: Exception) -> str:
    text = str(error) or error.__class__.__name__
    return text.replace("\r", " ").replace("\n", " ")[:120]
