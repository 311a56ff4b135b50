"""Upgrade requests (WebSocket and the like): forwarded with their Upgrade header, and after
the upstream's 101 the two connections are spliced into a byte tunnel with backpressure.

The exchange ends when the tunnel does, so a tunnel counts as a request in flight: it holds
its client connection (drain waits for it, up to the drain deadline) and its upstream
connection's pool slot. Each transport is handed to a `TunnelEnd` with `set_protocol`; the
connection objects that owned them still hear `connection_lost`, so their bookkeeping runs.

A side that stops sending (a half-close) is passed on as a half-close, and the other way stays
open. TLS has none: its end (close_notify) closes the whole connection. So a TLS side that
ends closes the tunnel, once what is in flight is flushed; and when a plaintext side ends and
the other side is TLS, the end cannot be passed on as it is. The upstream's end then closes the
tunnel (a server that stops sending is done with the connection, as a WebSocket server closing
first is), while the client's is held: it usually still waits for an answer, which comes back,
and the tunnel closes when the upstream's side ends or at the idle timeout. Across an mTLS hop,
the upstream does not see the client's half-close.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Protocol

from gossamer.proxy.exchange import Exchange
from gossamer.proxy.headers import HOP_BY_HOP, connection_tokens
from gossamer.proxy.http1 import RequestHead

if TYPE_CHECKING:
    from gossamer.proxy.downstream import DownstreamConnection
    from gossamer.proxy.router import CompiledRoute
    from gossamer.proxy.upstream import UpstreamConnection


class Splice(Protocol):
    """A connection whose transport a tunnel takes over."""

    transport: asyncio.Transport | None

    def connection_lost(self, exc: Exception | None) -> None:
        """Told when the socket closes, as if it still owned it."""


class UpgradeExchange(Exchange):
    """An Upgrade request: a normal exchange until a 101, then a tunnel until either side closes."""

    __slots__ = ("downstream", "early", "protocol", "tunnel")

    def __init__(self, client: DownstreamConnection, head: RequestHead) -> None:
        super().__init__(client, head)
        self.downstream = client
        # A refused upgrade leaves the client in an unknown state: close after the answer.
        self.keep_alive = False
        self.protocol = _upgrade_header(head.headers)
        self.early: list[bytes] = []
        self.tunnel: Tunnel | None = None

    def early_data(self, data: bytes) -> None:
        """Bytes the client sent after its request head, before any 101: the tunnel's first."""
        if data:
            self.early.append(data)

    def _upstream_head(self, route: CompiledRoute, target: bytes) -> bytes:
        head = super()._upstream_head(route, target)
        return head[:-2] + b"connection: upgrade\r\nupgrade: " + self.protocol + b"\r\n\r\n"

    def on_response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        """A 101 goes to the client as it is; any other answer is a normal response."""
        if status != 101:
            super().on_response_head(status, reason, headers, keep_alive)
            return
        if self.timer is not None:
            # The route timeout bounds the wait for the 101, not the tunnel's life.
            self.timer.cancel()
            self.timer = None
        self.status = 101
        self.response_started = True
        self.downstream.write(_switching_head(reason, headers))

    def on_switched(self, connection: UpstreamConnection, rest: bytes) -> None:
        """The upstream switched protocols: splice the two connections."""
        if self.status != 101 or self.finished:
            super().on_switched(connection, rest)
            return
        self._end_try(gateway_error=False)
        tunnel = Tunnel(self, self.downstream, connection, self.runtime.limits.idle_timeout)
        self.tunnel = tunnel
        early, self.early = self.early, []
        tunnel.open(early, rest)

    def tunnel_closed(self, sent_up: int, sent_down: int) -> None:
        """The tunnel is gone: record the request and let the client connection close."""
        self.body_size += sent_up
        self.response_bytes += sent_down
        self.keep_alive = False
        self._finish()


class TunnelEnd(asyncio.Protocol):
    """One side of a tunnel: what it reads is written to the other side."""

    __slots__ = ("eof", "gone", "owner", "peer", "received", "transport", "tunnel")

    def __init__(self, tunnel: Tunnel, owner: Splice, transport: asyncio.Transport) -> None:
        self.tunnel = tunnel
        self.owner = owner
        self.transport = transport
        self.peer: TunnelEnd = self
        self.eof = False
        self.gone = False
        self.received = 0

    def data_received(self, data: bytes) -> None:
        """Pass the bytes on."""
        self.received += len(data)
        self.tunnel.last_activity = time.monotonic()
        peer = self.peer.transport
        if not peer.is_closing():
            peer.write(data)

    def eof_received(self) -> bool:
        """Half-close: pass the end on; once both sides have ended, close both. Over TLS, see
        the module docstring."""
        self.eof = True
        peer = self.peer
        if peer.eof or not self.transport.can_write_eof():
            self.tunnel.close()
            return False
        if peer.transport.can_write_eof():
            if not peer.transport.is_closing():
                peer.transport.write_eof()
            return True
        if self is self.tunnel.upstream:
            self.tunnel.close()
            return False
        return True

    def pause_writing(self) -> None:
        """This side reads slowly: stop reading the other side."""
        self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        """This side caught up (at half the high-water mark): read the other side again."""
        if not self.peer.eof:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        """Either side closing closes the tunnel; the connection that owned it is told."""
        self.gone = True
        self.tunnel.lost()
        self.owner.connection_lost(exc)


class Tunnel:
    """Two transports spliced after a 101, closed together, with an idle timeout."""

    __slots__ = (
        "client",
        "closed",
        "exchange",
        "idle_timeout",
        "last_activity",
        "timer",
        "upstream",
    )

    def __init__(
        self,
        exchange: UpgradeExchange,
        downstream: Splice,
        upstream: UpstreamConnection,
        idle_timeout: float,
    ) -> None:
        assert downstream.transport is not None and upstream.transport is not None
        self.exchange = exchange
        self.client = TunnelEnd(self, downstream, downstream.transport)
        self.upstream = TunnelEnd(self, upstream, upstream.transport)
        self.client.peer, self.upstream.peer = self.upstream, self.client
        self.idle_timeout = idle_timeout
        self.last_activity = time.monotonic()
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None

    def open(self, early: list[bytes], rest: bytes) -> None:
        """Take both transports over; what either side sent ahead goes first."""
        for data in early:
            self.client.data_received(data)
        if rest:
            self.upstream.data_received(rest)
        for end in (self.client, self.upstream):
            end.transport.set_protocol(end)
            if _over_high_water(end.peer.transport):
                end.transport.pause_reading()
            else:
                end.transport.resume_reading()
        self.timer = asyncio.get_running_loop().call_later(self.idle_timeout, self._check_idle)

    def lost(self) -> None:
        """A side's socket is gone: close the other; stop the timer once both are gone."""
        self.close()
        if self.client.gone and self.upstream.gone and self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def close(self) -> None:
        """Close both sides (each flushes what it holds first) and end the exchange."""
        if self.closed:
            return
        self.closed = True
        self.client.transport.close()
        self.upstream.transport.close()
        self.exchange.tunnel_closed(self.client.received, self.upstream.received)

    def _check_idle(self) -> None:
        idle = time.monotonic() - self.last_activity
        if idle < self.idle_timeout:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.idle_timeout - idle, self._check_idle)
            return
        # Idle too long, or closed but a side will not take its last bytes: drop both.
        self.timer = None
        self.close()
        self.client.transport.abort()
        self.upstream.transport.abort()


def _over_high_water(transport: asyncio.Transport) -> bool:
    return transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]


def _upgrade_header(headers: list[tuple[bytes, bytes]]) -> bytes:
    for name, value in headers:
        if len(name) == 7 and name.lower() == b"upgrade":
            return value
    return b""


def _switching_head(reason: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The upstream's 101 for the client: its own headers, hop-by-hop ones but Upgrade removed."""
    drop = set(HOP_BY_HOP)
    for name, value in headers:
        if name.lower() == b"connection":
            drop |= connection_tokens(value)
    lines = [b"HTTP/1.1 101 ", reason or b"Switching Protocols", b"\r\n"]
    for name, value in headers:
        lower = name.lower()
        if lower not in drop or lower == b"upgrade":
            lines += (name, b": ", value, b"\r\n")
    lines.append(b"connection: upgrade\r\n\r\n")
    return b"".join(lines)
