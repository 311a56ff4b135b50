"""An HTTP/2 client connection: h2's state machine on a socket, one exchange per stream.

The `h2` library is the sans-IO core (frames, HPACK, stream states, flow-control windows); this
protocol feeds it bytes, turns its events into exchanges (`Http2Stream`), and writes the frames
it has ready, once per batch. Requests are translated and checked by `http2`, then routed,
retried and recorded exactly as HTTP/1.1 ones are; upstreams are still spoken to in HTTP/1.1.

A connection-level protocol error (bad frames, a CONTINUATION flood, an HPACK bomb, a client
that resets streams faster than `http2_max_resets` per `http2_reset_window`) ends this
connection with GOAWAY; a malformed request ends only its stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

from gossamer.proxy import local_reply as lr
from gossamer.proxy.apiproduct import ProductExchange
from gossamer.proxy.exchange import Exchange
from gossamer.proxy.http2 import (
    FrameLengths,
    HeaderRules,
    Refused,
    local_headers,
    trailers_problem,
    translate_request,
)
from gossamer.proxy.http2_stream import Http2Stream

if TYPE_CHECKING:
    from h2.events import Event

    from gossamer.proxy.server import ListenerHandle

log = logging.getLogger(__name__)

_CONFIG = H2Configuration(
    client_side=False,
    header_encoding=None,
    # `http2.translate_request` checks every request field itself, and refuses a malformed
    # request on its stream alone; h2's own checks would end the whole connection.
    validate_inbound_headers=False,
    normalize_inbound_headers=False,
    # The writers hand h2 lower-case names without connection-specific fields.
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)
HEADER_LIST_HARD_FACTOR = 2
"""The HPACK decoder stops a header list at this many times the listener's max_header_bytes
(a connection error: an HPACK bomb); between the two, the stream is answered 431."""


class Http2Connection(asyncio.Protocol):
    """One HTTP/2 client connection and its streams."""

    __slots__ = (
        "batching",
        "frames",
        "going_away",
        "h2",
        "handle",
        "last_activity",
        "last_stream",
        "peer",
        "peer_bytes",
        "principal",
        "resets",
        "resets_since",
        "secure",
        "streams",
        "transport",
        "write_paused",
    )

    def __init__(self, handle: ListenerHandle, peer: str, principal: str, secure: bool) -> None:
        self.handle = handle
        self.peer = peer
        self.peer_bytes = peer.encode()
        self.principal = principal
        self.secure = secure
        self.transport: asyncio.Transport | None = None
        self.h2 = H2Connection(_CONFIG)
        self.frames = FrameLengths(self.h2.max_inbound_frame_size)
        self.streams: dict[int, Http2Stream] = {}
        self.batching = False
        self.write_paused = False
        self.going_away = False
        """GOAWAY was sent: no new stream is taken."""
        self.last_stream = 0
        self.resets = 0
        self.resets_since = time.monotonic()
        self.last_activity = time.monotonic()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the server's SETTINGS (the limits), or GOAWAY at max_connections."""
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        limits = self.handle.runtime.limits
        high = limits.max_request_body_buffer
        transport.set_write_buffer_limits(high=high, low=high // 2)
        h2 = self.h2
        h2.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: limits.http2_max_concurrent_streams,
                SettingCodes.INITIAL_WINDOW_SIZE: limits.http2_stream_window,
                SettingCodes.MAX_HEADER_LIST_SIZE: HEADER_LIST_HARD_FACTOR
                * limits.max_header_bytes,
                SettingCodes.ENABLE_PUSH: 0,
            },
        )
        h2.decoder.max_header_list_size = HEADER_LIST_HARD_FACTOR * limits.max_header_bytes
        h2.initiate_connection()
        extra = limits.http2_connection_window - 65535
        if extra > 0:
            h2.increment_flow_control_window(extra)
        if not self.handle.admit(self):
            self.handle.runtime.stats.incr("gossamer_downstream_connections_refused_total")
            self._go_away(ErrorCodes.REFUSED_STREAM)
            return
        self.flush()

    def data_received(self, data: bytes) -> None:
        """Feed h2; act on its events; send what it has to say."""
        self.last_activity = time.monotonic()
        if not self.frames.feed(data):
            self._protocol_error(
                "frame larger than SETTINGS_MAX_FRAME_SIZE", ErrorCodes.FRAME_SIZE_ERROR
            )
            return
        self.batching = True
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as error:
            self._protocol_error(str(error))
            return
        try:
            for event in events:
                self._on_event(event)
                transport = self.transport
                if transport is None or transport.is_closing():
                    break  # the connection ended on one of them: the rest is moot
        except Exception:
            # A bug of ours: say so, end this connection, keep serving everyone else.
            log.exception("internal error handling an HTTP/2 connection")
            self.handle.runtime.stats.incr("gossamer_internal_errors_total")
            self.batching = False
            self._send_goaway(ErrorCodes.INTERNAL_ERROR)
            self._close()
        finally:
            self.batching = False
            self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        """Abandon every stream in flight."""
        self.transport = None
        self.handle.forget(self)
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            self._uncount(stream)
            stream.lost()

    def pause_writing(self) -> None:
        """The socket's buffer is full: every stream pauses its upstream."""
        self.write_paused = True
        for stream in list(self.streams.values()):
            stream.update_write_pause()

    def resume_writing(self) -> None:
        """The socket drained."""
        self.write_paused = False
        for stream in list(self.streams.values()):
            stream.update_write_pause()

    # Events

    def _on_event(self, event: Event) -> None:
        if isinstance(event, DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.take_body(event.data, event.flow_controlled_length)
            elif event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, RequestReceived):
            self._request(event.stream_id, event.headers, event.stream_ended is not None)
        elif isinstance(event, StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.end_request()
                self.settle(stream)
        elif isinstance(event, WindowUpdated):
            self._window_opened(event.stream_id)
        elif isinstance(event, RemoteSettingsChanged):
            if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                self._window_opened(0)
        elif isinstance(event, TrailersReceived):
            self._trailers(event.stream_id, event.headers)
        elif isinstance(event, StreamReset):
            self._stream_reset(event.stream_id, event.remote_reset)
        elif isinstance(event, ConnectionTerminated):
            # h2 sends nothing after a GOAWAY either way: what is in flight is lost.
            self._close()

    def _request(self, stream_id: int, fields: list[tuple[bytes, bytes]], ended: bool) -> None:
        self.last_stream = stream_id
        if self.going_away:
            self._reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        handle = self.handle
        runtime = handle.runtime
        limits = runtime.limits
        rules = HeaderRules(
            limits.max_header_bytes, limits.max_headers, runtime.drop_underscore_headers
        )
        started = time.monotonic()
        head, dropped = translate_request(fields, ended, rules, started)
        if dropped:
            runtime.stats.incr("gossamer_dropped_headers_with_underscores_total", dropped)
        if isinstance(head, Refused):
            self._refuse(stream_id, head, ended)
            return
        stream = Http2Stream(self, stream_id, started)
        self.streams[stream_id] = stream
        products = runtime.products
        exchange = Exchange(stream, head) if products is None else ProductExchange(stream, head)
        stream.exchange = exchange
        # As HTTP/1.1's parser does it: the exchange starts with its head, and a request that
        # has no body ends right after (h2's StreamEnded for it then finds it ended).
        stream.request_done = ended
        if not handle.begin_request():
            exchange.local(503, "overloaded: too many concurrent requests", lr.LOAD_SHED)
        else:
            stream.counted = True
            exchange.start()
        if ended:
            exchange.request_end([])
            self.settle(stream)

    def _refuse(self, stream_id: int, refused: Refused, ended: bool) -> None:
        # As HTTP/1.1's parser refusals: a reply that no exchange records, then the stream ends.
        self.handle.runtime.stats.incr("gossamer_downstream_rejected_requests_total")
        body = f"{refused.reason}\n".encode()
        h2 = self.h2
        h2.send_headers(stream_id, local_headers(refused.status, refused.reason, body, None))
        h2.send_data(stream_id, body, end_stream=True)
        if not ended:
            # RFC 9113 8.1.1: a malformed request is a stream error; a request refused for its
            # size or method asks the client to stop sending, without error.
            code = ErrorCodes.PROTOCOL_ERROR if refused.status == 400 else ErrorCodes.NO_ERROR
            self._reset_stream(stream_id, code)

    def _trailers(self, stream_id: int, fields: list[tuple[bytes, bytes]]) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        problem = trailers_problem(fields)
        if problem is None:
            stream.trailers = list(fields)
            return
        self.handle.runtime.stats.incr("gossamer_downstream_rejected_requests_total")
        exchange = stream.exchange
        if exchange is not None and not exchange.finished and not exchange.response_started:
            exchange.refuse(400, f"malformed request: {problem}")
        self.reset(stream, ErrorCodes.PROTOCOL_ERROR)

    def _stream_reset(self, stream_id: int, by_client: bool) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            self._uncount(stream)
            self._release_window(stream)
            stream.lost()
        if not by_client:
            return
        now = time.monotonic()
        limits = self.handle.runtime.limits
        if now - self.resets_since > limits.http2_reset_window:
            self.resets_since = now
            self.resets = 0
        self.resets += 1
        if self.resets > limits.http2_max_resets:
            self.handle.runtime.stats.incr("gossamer_http2_reset_flood_total")
            log.info("closing HTTP/2 connection from %s: too many stream resets", self.peer)
            self._protocol_error("too many stream resets", ErrorCodes.ENHANCE_YOUR_CALM)

    def _window_opened(self, stream_id: int) -> None:
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None and stream.pending:
                stream.flush()
            return
        for stream in list(self.streams.values()):
            if stream.pending:
                stream.flush()

    # Used by streams

    def begin_batch(self) -> bool:
        """Hold frames until end_batch (True if this call started the batch)."""
        if self.batching:
            return False
        self.batching = True
        return True

    def end_batch(self) -> None:
        """Send the frames held."""
        self.batching = False
        self.flush()

    def flush(self) -> None:
        """Write what h2 has ready, unless a batch holds it."""
        if self.batching:
            return
        data = self.h2.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def acknowledge(self, stream: Http2Stream, size: int) -> None:
        """Credit request body back to the client (WINDOW_UPDATE when h2 finds it worth one)."""
        if self.transport is not None:
            self.h2.acknowledge_received_data(size, stream.stream_id)
            self.flush()

    def send_head(self, stream: Http2Stream, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        """HEADERS for a stream's response."""
        self.h2.send_headers(stream.stream_id, headers, end_stream=end)
        self.flush()

    def send_pending(self, stream: Http2Stream) -> None:
        """Send as much of a stream's waiting body as the windows take, in frames h2 allows."""
        h2 = self.h2
        stream_id = stream.stream_id
        pending = stream.pending
        while pending:
            room = min(h2.local_flow_control_window(stream_id), h2.max_outbound_frame_size)
            if room <= 0:
                break
            chunk = bytes(pending[:room])
            del pending[:room]
            h2.send_data(stream_id, chunk)
        self.flush()

    def end_response(self, stream: Http2Stream, trailers: list[tuple[bytes, bytes]]) -> None:
        """END_STREAM, on trailers if there are any; the stream is settled if its exchange is."""
        if trailers:
            self.h2.send_headers(stream.stream_id, trailers, end_stream=True)
        else:
            self.h2.end_stream(stream.stream_id)
        self.flush()
        self.settle(stream)

    def settle(self, stream: Http2Stream) -> None:
        """Forget a stream whose exchange is over and whose response has gone; a client still
        sending its request is asked to stop (RFC 9113 8.1: RST_STREAM NO_ERROR)."""
        exchange = stream.exchange
        if exchange is None or not exchange.finished or not (stream.response_done or stream.reset):
            return
        if self.streams.get(stream.stream_id) is not stream:
            return
        del self.streams[stream.stream_id]
        self._release_window(stream)
        if not stream.request_done and not stream.reset:
            stream.reset = True
            self._reset_stream(stream.stream_id, ErrorCodes.NO_ERROR)
        if self.going_away and not self.streams:
            self._close()

    def reset(self, stream: Http2Stream, code: ErrorCodes) -> None:
        """End a stream at once with RST_STREAM."""
        if stream.reset:
            return
        stream.reset = True
        stream.pending.clear()
        stream.pending_end = None
        self._reset_stream(stream.stream_id, code)
        self.settle(stream)

    # Limits, draining, endings

    def check_timeouts(self, now: float) -> None:
        """Called by the listener's sweep: a request body slower than request_timeout gets a 408
        (or its stream is reset), an idle connection goes away."""
        limits = self.handle.runtime.limits
        for stream in list(self.streams.values()):
            exchange = stream.exchange
            if (
                exchange is not None
                and not stream.request_done
                and now - stream.started > limits.request_timeout
            ):
                if not exchange.finished and not exchange.response_started:
                    exchange.refuse(408, "request timeout")
                self.reset(stream, ErrorCodes.CANCEL)
                stream.lost()
        if not self.streams and now - self.last_activity > limits.idle_timeout:
            self.drain()

    def drain(self) -> None:
        """GOAWAY: no new streams; the connection closes once those in flight are done."""
        if not self.going_away:
            self.going_away = True
            self._send_goaway(ErrorCodes.NO_ERROR)
        if not self.streams:
            self._close()

    def abort(self) -> None:
        """Close at once."""
        if self.transport is not None:
            self.transport.abort()

    def _protocol_error(self, reason: str, code: ErrorCodes | None = None) -> None:
        # h2 has queued its GOAWAY when it raised; a GOAWAY of ours is queued otherwise.
        self.handle.runtime.stats.incr("gossamer_http2_protocol_errors_total")
        log.debug("HTTP/2 protocol error from %s: %s", self.peer, reason)
        if code is not None:
            self.batching = False
            self.flush()
            self._send_goaway(code)
        self.batching = False
        self.flush()
        self._close()

    def _go_away(self, code: ErrorCodes) -> None:
        self.going_away = True
        self.flush()
        self._send_goaway(code)
        self._close()

    def _send_goaway(self, code: ErrorCodes) -> None:
        # Written past h2, whose state machine sends nothing more after a GOAWAY of its own:
        # the streams in flight still have their responses to send.
        self.flush()
        if self.transport is not None:
            frame = GoAwayFrame(0, last_stream_id=self.last_stream, error_code=int(code))
            self.transport.write(frame.serialize())

    def _reset_stream(self, stream_id: int, code: ErrorCodes) -> None:
        try:
            self.h2.reset_stream(stream_id, code)
        except StreamClosedError:
            return  # both sides had ended it: nothing left to reset
        self.flush()

    def _release_window(self, stream: Http2Stream) -> None:
        # Body a paused stream held back still counts against the connection's window.
        if stream.unacked and self.transport is not None:
            unacked, stream.unacked = stream.unacked, 0
            self.h2.acknowledge_received_data(unacked, stream.stream_id)

    def _uncount(self, stream: Http2Stream) -> None:
        if stream.counted:
            stream.counted = False
            self.handle.end_request()

    def _close(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self.batching = False
            self.flush()
            transport.close()
