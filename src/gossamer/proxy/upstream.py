"""One connection to an upstream endpoint: sends requests, parses responses for an exchange."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Final, cast

import httptools

if TYPE_CHECKING:
    from gossamer.proxy.cluster import ClusterState, EndpointState

log = logging.getLogger(__name__)


class ResponseSink:
    """What an upstream connection tells the exchange it serves (or a mirrored copy).

    A class rather than a protocol, so that compiled code calls its methods directly."""

    __slots__ = ()

    def begin_batch(self) -> bool:
        """Hold the client's writes while a chunk of response is parsed (True if this call
        started the batch); a sink with no client holds nothing."""
        return False

    def end_batch(self) -> None:
        """Send what the batch held."""

    def on_response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        """The status line and headers arrived."""
        raise NotImplementedError

    def on_response_body(self, data: bytes) -> None:
        """Part of the body arrived."""
        raise NotImplementedError

    def on_response_tail(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """The response is complete: send the client what it is still owed, at once, before
        the connection goes back to the pool and `on_response_end` does the bookkeeping."""

    def on_response_end(self, trailers: list[tuple[bytes, bytes]], keep_alive: bool) -> None:
        """The response is complete and sent: end the exchange."""
        raise NotImplementedError

    def on_upstream_lost(self, reason: str) -> None:
        """The connection failed or closed before the response was complete."""
        raise NotImplementedError

    def request_sent(self) -> bool:
        """Whether the whole request was handed to the connection. An upstream may answer
        before it has read the body (a 403 on the head alone); until the rest is sent, the
        connection cannot carry another request: the upstream would read that as the body."""
        return True

    def on_upstream_pause(self) -> None:
        """The connection's write buffer is full: stop reading the request body."""

    def on_upstream_resume(self) -> None:
        """The write buffer drained: read the request body again."""

    def on_switched(self, connection: UpstreamConnection, rest: bytes) -> None:
        """The upstream answered 101: the connection, and `rest`, are another protocol's now."""
        connection.close()


class _Inert:
    """A parser's protocol with no callbacks: what closed connections keep."""


_CLOSED_PARSER: Final = httptools.HttpResponseParser(_Inert())


class UpstreamConnection(asyncio.Protocol):
    """A keep-alive HTTP/1.1 client connection, serving one exchange at a time."""

    __slots__ = (
        "_high_water",
        "cluster",
        "endpoint",
        "head_only",
        "headers",
        "idle_since",
        "in_headers",
        "is_closed",
        "parser",
        "reading_paused",
        "reason",
        "served",
        "sink",
        "trailers",
        "transport",
    )

    def __init__(self, cluster: ClusterState, endpoint: EndpointState, high_water: int) -> None:
        self.cluster = cluster
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.trailers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.in_headers = True
        self.head_only = False
        self.served = 0
        self.idle_since = time.monotonic()
        self.is_closed = False
        self.reading_paused = False
        """The client of the exchange served is slow: the response is not read meanwhile."""
        self._high_water = high_water

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport; bound its write buffer (resume at half the high mark)."""
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=self._high_water, low=self._high_water // 2)

    def data_received(self, data: bytes) -> None:
        """Parse response bytes; a parse error or unexpected bytes end the connection."""
        sink = self.sink
        if sink is None:
            self.close()
            return
        # The sink that started a batch ends it, whoever the connection serves by then.
        batching = sink.begin_batch()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as switched:
            # The 101 reaches the client before any byte of what follows it.
            sink.end_batch()
            self._switched(data[switched.args[0] :])
        except httptools.HttpParserError as error:
            if isinstance(error, httptools.HttpParserCallbackError):
                log.error("internal error handling a response", exc_info=error.__context__)
            lost = self.sink
            self.sink = None
            self.close()
            if lost is not None:
                lost.on_upstream_lost("upstream protocol error")
        finally:
            if batching:
                sink.end_batch()

    def connection_lost(self, exc: Exception | None) -> None:
        """Tell the exchange, if one was waiting, and free the pool slot."""
        if self.is_closed and self.transport is None:
            return
        self.is_closed = True
        self.transport = None
        # The parser holds this connection's callbacks: let go of it, or the pair is a cycle
        # that only the garbage collector frees (one per closed connection).
        self.parser = _CLOSED_PARSER
        self.cluster.closed(self)
        sink = self.sink
        self.sink = None
        if sink is not None:
            sink.on_upstream_lost("upstream reset" if exc is None else f"upstream reset: {exc}")

    def pause_writing(self) -> None:
        """Request body flow control: the exchange stops reading its client."""
        if self.sink is not None:
            self.sink.on_upstream_pause()

    def resume_writing(self) -> None:
        """The write buffer drained."""
        if self.sink is not None:
            self.sink.on_upstream_resume()

    # httptools callbacks

    def on_status(self, status: bytes) -> None:
        """Keep the reason phrase to pass it on."""
        self.reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        """A header, or a trailer once the head is complete."""
        if self.in_headers:
            self.headers.append((name, value))
        else:
            self.trailers.append((name, value))

    def on_headers_complete(self) -> None:
        """Hand the head to the exchange; a response to HEAD ends here."""
        self.in_headers = False
        sink = self.sink
        if sink is None:
            return
        status = self.parser.get_status_code()
        keep_alive = self.parser.should_keep_alive()
        sink.on_response_head(status, self.reason, self.headers, keep_alive)
        if self.head_only and status >= 200:
            self._finish(keep_alive)
            # A response to HEAD has no body whatever Content-Length says: start a fresh parser.
            self.parser = httptools.HttpResponseParser(self)

    def on_body(self, body: bytes) -> None:
        """Stream the body to the exchange."""
        if self.sink is not None:
            self.sink.on_response_body(body)

    def on_message_complete(self) -> None:
        """The response is complete (an informational 1xx is followed by the real one)."""
        if self.sink is None:
            return
        if self.parser.get_status_code() < 200:
            self._reset_for_next()
            return
        if not self.head_only:
            self._finish(self.parser.should_keep_alive())

    # Used by the exchange

    def start(self, sink: ResponseSink, data: bytes | list[bytes], head_only: bool) -> None:
        """Send a request head (and any body already at hand) for `sink`."""
        self.sink = sink
        self.head_only = head_only
        transport = self.transport
        assert transport is not None
        if isinstance(data, bytes):
            transport.write(data)
        else:
            transport.writelines(data)
        self._reset_for_next()  # after the send: no answer can come before this returns

    def write(self, data: bytes) -> None:
        """More request body."""
        if self.transport is not None:
            self.transport.write(data)

    def usable(self) -> bool:
        """Whether this idle connection can carry another request."""
        return not self.is_closed and self.transport is not None and not self.transport.is_closing()

    def pause_reading(self) -> None:
        """Response body flow control: the client is slow."""
        self.reading_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """The client caught up."""
        self.reading_paused = False
        if self.transport is not None:
            self.transport.resume_reading()

    def detach(self) -> None:
        """The exchange no longer wants this connection's answer (it timed out or gave up)."""
        self.sink = None
        self.close()

    def close(self) -> None:
        """Close now; connection_lost frees the slot."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()
        elif transport is None and not self.is_closed:
            self.is_closed = True

    def _switched(self, rest: bytes) -> None:
        sink = self.sink
        self.sink = None
        if sink is None:
            self.close()
        else:
            sink.on_switched(self, rest)

    def _reset_for_next(self) -> None:
        self.headers = []
        self.trailers = []
        self.in_headers = True
        self.reason = b""

    def _finish(self, keep_alive: bool) -> None:
        sink = self.sink
        self.sink = None
        self.served += 1
        limit = self.cluster.limits.max_requests_per_connection
        assert sink is not None
        reusable = (
            keep_alive
            and not (limit and self.served >= limit)
            and sink.request_sent()
            and self.usable()
        )
        trailers = self.trailers
        sink.on_response_tail(trailers)
        if reusable:
            if self.reading_paused:
                # The whole response came before the client caught up: the pause was for that
                # client, not for whoever takes the connection next.
                self.resume_reading()
            self.cluster.release(self)
        else:
            self.close()
        sink.on_response_end(trailers, keep_alive)

    def __repr__(self) -> str:
        state = "closed" if self.is_closed else ("active" if self.sink else "idle")
        return f"<UpstreamConnection {self.endpoint.address}:{self.endpoint.port} {state}>"
