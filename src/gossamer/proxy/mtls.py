"""Mesh mTLS in the proxy: its certificate as SSL contexts, and an inbound port that takes both.

The proxy's key and certificate chain come from the control plane's CA (the agent writes them
to a private folder, since Python's ssl reads them only from files); the trust anchors come in
the snapshot. `MeshTls` holds the contexts built from both; a renewed certificate or a new
bundle builds a new one, which new handshakes use while established connections carry on.

An inbound listener with mTLS accepts connections itself: it peeks at the first byte, a TLS
record (0x16) is a sidecar's handshake, anything else is a plaintext client. PERMISSIVE takes
both on one port, STRICT closes plaintext at once, DISABLE closes TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from gossamer.proxy.memory import keep_tls_buffers_on_heap
from gossamer.proxy.sockets import listening_socket
from gossamer.security.spiffe import client_context, server_context
from gossamer.snapshot.model import InboundMtls, MtlsMode

if TYPE_CHECKING:
    from gossamer.proxy.server import ListenerHandle
    from gossamer.proxy.tcp_listeners import TcpListenerHandle

log = logging.getLogger(__name__)


class MeshIdentityError(ConnectionError):
    """An mTLS upstream could not be called, or was not who its endpoint says it is."""


TLS_HANDSHAKE = 0x16
"""The first byte of a TLS record carrying a handshake (a ClientHello starts with it)."""
SNIFF_TIMEOUT_S = 10.0
HANDSHAKE_TIMEOUT_S = 10.0


class MeshTls:
    """The proxy's mesh identity as SSL contexts: one to accept sidecars, one to call them."""

    __slots__ = ("client", "roots", "server", "spiffe", "trust_domain")

    def __init__(
        self,
        cert_file: str,
        key_file: str,
        spiffe: str,
        roots: Sequence[str],
        trust_domain: str,
    ) -> None:
        keep_tls_buffers_on_heap()
        self.spiffe = spiffe
        self.roots = tuple(roots)
        self.trust_domain = trust_domain
        self.server = server_context(cert_file, key_file, roots, require_client_cert=True)
        self.client = client_context(cert_file, key_file, roots)

    def __repr__(self) -> str:
        return f"<MeshTls {self.spiffe}, {len(self.roots)} roots>"

    def trusts(self, spiffe: str) -> bool:
        """Whether a peer's SPIFFE id is of this mesh's trust domain."""
        return spiffe.startswith(f"spiffe://{self.trust_domain}/")


def accepts_plaintext(mtls: InboundMtls) -> bool:
    """Whether any port of the listener takes plaintext."""
    return mtls.mode != "STRICT" or any(mode != "STRICT" for _, mode in mtls.ports)


def accepts_tls(mtls: InboundMtls) -> bool:
    """Whether any port of the listener takes mTLS."""
    return mtls.mode != "DISABLE" or any(mode != "DISABLE" for _, mode in mtls.ports)


def port_mode(mtls: InboundMtls, port: int) -> MtlsMode:
    """The mode for requests to one app port: its override, else the listener's."""
    for number, mode in mtls.ports:
        if number == port:
            return mode
    return mtls.mode


class MeshAcceptor:
    """Accepts an mTLS listener's connections: TLS or plaintext by the first byte.

    Stands where an `asyncio.Server` stands for plain listeners: `sockets`, `close`,
    `wait_closed`.
    """

    def __init__(
        self,
        handle: ListenerHandle | TcpListenerHandle,
        sock: socket.socket,
        protocol: Callable[[], asyncio.Protocol],
    ) -> None:
        self.handle = handle
        self.sock = sock
        self.protocol = protocol
        self.sockets = (sock,)
        self._accepting: asyncio.Task[None] | None = None
        self._sniffing: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()

    def __repr__(self) -> str:
        return f"<MeshAcceptor {self.sock.getsockname()} {len(self._sniffing)} sniffing>"

    @classmethod
    async def start(
        cls, handle: ListenerHandle | TcpListenerHandle, protocol: Callable[[], asyncio.Protocol]
    ) -> MeshAcceptor:
        """Bind the listener's address and start accepting."""
        sock = listening_socket(handle.config.address, handle.config.port)
        acceptor = cls(handle, sock, protocol)
        acceptor._accepting = asyncio.get_running_loop().create_task(acceptor._accept())
        return acceptor

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as error:
                log.warning("accept on %s: %s", self.handle.config.name, error)
                await asyncio.sleep(0.05)
                continue
            task = loop.create_task(self._sniff(conn))
            self._sniffing.add(task)
            task.add_done_callback(self._sniffing.discard)

    async def _sniff(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mtls = self.handle.config.mtls
        assert mtls is not None, "only mTLS listeners have an acceptor"
        try:
            async with asyncio.timeout(SNIFF_TIMEOUT_S):
                first = await _peek(loop, conn)
        except (TimeoutError, OSError):
            conn.close()
            return
        if not first:
            conn.close()
            return
        stats = self.handle.runtime.stats
        tls = first[0] == TLS_HANDSHAKE
        mesh_tls = self.handle.proxy.mesh_tls
        if tls and (mesh_tls is None or not accepts_tls(mtls)):
            stats.incr("gossamer_mtls_refused_total")
            conn.close()
            return
        if not tls and not accepts_plaintext(mtls):
            # STRICT: a plaintext client learns nothing but a closed connection, as in Istio.
            stats.incr("gossamer_mtls_plaintext_refused_total")
            conn.close()
            return
        try:
            await loop.connect_accepted_socket(
                self.protocol,
                conn,
                ssl=mesh_tls.server if tls and mesh_tls is not None else None,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if tls else None,
            )
        except (OSError, ssl.SSLError, TimeoutError) as error:
            stats.incr("gossamer_mtls_handshake_failures_total")
            log.debug("mTLS handshake on %s failed: %s", self.handle.config.name, error)
            conn.close()

    def close(self) -> None:
        """Stop accepting (connections already made carry on)."""
        if self._accepting is not None:
            self._accepting.cancel()
        for task in list(self._sniffing):
            task.cancel()
        self.sock.close()
        self._closed.set()

    async def wait_closed(self) -> None:
        """Return once closed."""
        if self._accepting is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        await self._closed.wait()


async def _peek(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bytes:
    """The first byte the peer sent, left in the socket for whoever reads it next."""
    while True:
        try:
            return conn.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            pass
        readable: asyncio.Future[None] = loop.create_future()

        def ready(future: asyncio.Future[None] = readable) -> None:
            if not future.done():
                future.set_result(None)

        loop.add_reader(conn.fileno(), ready)
        try:
            await readable
        finally:
            loop.remove_reader(conn.fileno())
