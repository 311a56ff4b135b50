"""The mesh DNS server: UDP and TCP on one port (15053 by default), answers from a directory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from typing import cast

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode

from gossamer.discovery.directory import Directory
from gossamer.discovery.resolver import DnsConfig, OutsideError, answer

log = logging.getLogger(__name__)

FORWARD_TIMEOUT = 2.0
UDP_LIMIT = 512
TCP_READ_TIMEOUT = 10.0


class DnsServer:
    """Serves the directory over DNS; `port` is the bound port once started."""

    def __init__(
        self,
        directory: Directory,
        config: DnsConfig | None = None,
        address: str = "127.0.0.1",
        port: int = 15053,
    ) -> None:
        self.directory = directory
        self.config = config or DnsConfig()
        self.address = address
        self.port = port
        self.counters: dict[str, int] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._replies: _UdpProtocol | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind UDP, then TCP on the same port.

        With port 0 the kernel picks a free UDP port, and the same number may be taken for
        TCP: then another pair is tried (a few times), and the UDP socket is never left open.
        """
        loop = asyncio.get_running_loop()
        wanted = self.port
        for attempt in range(1, 9):
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.address, wanted)
            )
            port = int(transport.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.address, port)
            except OSError:
                transport.close()
                if wanted != 0 or attempt == 8:
                    raise
                continue
            self._udp, self._replies, self.port = transport, protocol, port
            return

    async def close(self) -> None:
        """Stop serving: replies still waiting (on a forwarder) are cancelled, not left behind."""
        if self._udp is not None:
            self._udp.close()
        if self._replies is not None and self._replies.tasks:
            pending = list(self._replies.tasks)
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1.0)

    async def resolve(self, wire: bytes, limit: int | None) -> bytes | None:
        """The wire response to a wire query; None when the query cannot even be parsed."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            self._count("malformed")
            return None
        self._count("queries")
        try:
            response = answer(query, self.directory, self.config)
        except OutsideError:
            return await self._outside(query, limit)
        if response.rcode() == dns.rcode.NXDOMAIN:
            self._count("nxdomain")
        return _to_wire(response, limit)

    async def _outside(self, query: dns.message.Message, limit: int | None) -> bytes:
        for forwarder in self.config.forwarders:
            host, _, port = forwarder.rpartition(":")
            try:
                response = await dns.asyncquery.udp(
                    query, host or forwarder, port=int(port or 53), timeout=FORWARD_TIMEOUT
                )
            except (dns.exception.DNSException, OSError):
                continue
            self._count("forwarded")
            return _to_wire(response, limit)
        self._count("refused")
        refused = dns.message.make_response(query)
        refused.set_rcode(dns.rcode.REFUSED)
        return _to_wire(refused, limit)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = struct.unpack(
                    "!H", await asyncio.wait_for(reader.readexactly(2), TCP_READ_TIMEOUT)
                )[0]
                wire = await asyncio.wait_for(reader.readexactly(size), TCP_READ_TIMEOUT)
                response = await self.resolve(wire, None)
                if response is None:
                    return
                writer.write(struct.pack("!H", len(response)) + response)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            return
        finally:
            writer.close()

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        task = asyncio.get_running_loop().create_task(self._reply(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _reply(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = dns.message.from_wire(data)
            limit = max(UDP_LIMIT, query.payload) if query.edns >= 0 else UDP_LIMIT
        except dns.exception.DNSException:
            limit = UDP_LIMIT
        response = await self.server.resolve(data, limit)
        if response is not None and self.transport is not None:
            self.transport.sendto(response, addr)


def _to_wire(response: dns.message.Message, limit: int | None) -> bytes:
    try:
        return response.to_wire(max_size=limit or 65535)
    except dns.exception.TooBig:
        # Too big for UDP: say so (TC), and the client asks again over TCP.
        response.answer.clear()
        response.additional.clear()
        response.flags |= dns.flags.TC
        return response.to_wire()
