"""The downstream codec boundary: what an exchange needs of the client its request came from.

An exchange does not know which protocol its client speaks. It reads who the client is
(`ClientSide`), asks it to pause or resume reading the request body, tells it when the exchange
is done, and writes its response through the `ResponseWriter` the client hands it. An HTTP/1.1
connection (`downstream`, with `http1.Http1Writer`) and an HTTP/2 stream (`http2_stream`) each
implement both; routing, retries, timeouts, mirrors and metrics are the same code for either.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gossamer.proxy.exchange import Exchange
    from gossamer.proxy.http1 import RequestHead
    from gossamer.proxy.listener import ListenerRuntime


class ClientSide(asyncio.Protocol):
    """The client of an exchange: an HTTP/1.1 connection, or one stream of an HTTP/2 one.

    An asyncio.Protocol only so that the HTTP/1.1 connection, which is one, keeps a single base
    class: compiled code then calls these methods and reads these fields directly."""

    __slots__ = ("peer", "peer_bytes", "principal", "runtime", "secure", "write_paused")

    def __init__(self, runtime: ListenerRuntime) -> None:
        self.runtime = runtime
        self.peer = ""
        """The client's address."""
        self.peer_bytes = b""
        """`peer` as bytes, for x-forwarded-for."""
        self.principal = ""
        """The SPIFFE id its mTLS certificate proved ("" for none)."""
        self.secure = False
        """The request came over mTLS."""
        self.write_paused = False
        """The client reads the response slower than it comes: the upstream should wait."""

    def response_writer(self, head: RequestHead, head_only: bool) -> ResponseWriter:
        """A writer for the response to `head` (`head_only`: a response to HEAD)."""
        raise NotImplementedError

    def begin_batch(self) -> bool:
        """Collect writes until end_batch (True if this call started the batch)."""
        raise NotImplementedError

    def end_batch(self) -> None:
        """Send what the batch collected."""
        raise NotImplementedError

    def pause_reading(self, why: str = "body") -> None:
        """Stop taking request body until every reason to pause is gone."""
        raise NotImplementedError

    def resume_reading(self, why: str = "body") -> None:
        """Take request body again once nothing holds it paused."""
        raise NotImplementedError

    def exchange_done(self, exchange: Exchange, keep_alive: bool) -> None:
        """The exchange ended (`keep_alive`: the client may send another request)."""
        raise NotImplementedError

    def abort(self) -> None:
        """Give up a response already under way: the client must see it was cut short."""
        raise NotImplementedError


class ResponseWriter:
    """One response on its way to the client, in the client's protocol.

    The exchange hands it header lists without hop-by-hop fields, body chunks and trailers;
    the writer frames and sends them."""

    __slots__ = ("closes",)

    def __init__(self) -> None:
        self.closes = False
        """The client's connection closes after this response (said in its head)."""

    def framing_for(self, status: int, length_known: bool) -> tuple[bytes, bytes] | None:
        """Choose how the body is delimited; a header the head then needs, if any."""
        raise NotImplementedError

    def send_head(
        self, status: int, reason: bytes, fields: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        """Send the status and headers (`keep_alive`: the client may send another request)."""
        raise NotImplementedError

    def send_body(self, data: bytes) -> None:
        """Send part of the body."""
        raise NotImplementedError

    def send_end(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """End the body, with trailers if any."""
        raise NotImplementedError

    def send_local(
        self,
        status: int,
        reason: str,
        keep_alive: bool,
        body: bytes | None,
        extra: list[tuple[bytes, bytes]] | None,
    ) -> int:
        """Send a whole reply made by the proxy (see `local_reply`); the bytes it took."""
        raise NotImplementedError

    def send_continue(self) -> None:
        """The interim 100 Continue a client that sent `Expect: 100-continue` waits for."""
        raise NotImplementedError
