"""A tiny WebSocket (RFC 6455) echo upstream and client helpers, written by hand for proxy tests.

Only what the tests need: the opening handshake, unfragmented frames of any length, masking,
and the close handshake. The upstream records each handshake's request headers.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from dataclasses import dataclass, field

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE = 0x1, 0x2, 0x8


def accept_key(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept a server answers `key` with."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def encode_frame(opcode: int, payload: bytes, *, masked: bool) -> bytes:
    """One final frame; clients mask, servers do not."""
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, mask_bit | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, mask_bit | 127, length)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + _unmask(key, payload)


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one frame: its opcode and unmasked payload."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    key = await reader.readexactly(4) if second & 0x80 else b""
    payload = await reader.readexactly(length)
    return first & 0x0F, _unmask(key, payload) if key else payload


def _unmask(key: bytes, payload: bytes) -> bytes:
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


async def read_head(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str]]:
    """A request or response head: its first line and its headers (names lowercase)."""
    raw = await reader.readuntil(b"\r\n\r\n")
    first, *lines = raw[:-4].split(b"\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return first, headers


@dataclass
class EchoServer:
    """Answers WebSocket handshakes with 101 and echoes every data frame until a close."""

    server: asyncio.Server | None = None
    handshakes: list[dict[str, str]] = field(default_factory=list)
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> EchoServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in list(self.writers):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            _, headers = await read_head(reader)
            self.handshakes.append(headers)
            key = headers["sec-websocket-key"].encode()
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n"
            )
            while True:
                opcode, payload = await read_frame(reader)
                writer.write(encode_frame(opcode, payload, masked=False))
                await writer.drain()
                if opcode == CLOSE:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.writers.discard(writer)
            writer.close()


async def open_websocket(
    port: int, *, path: bytes = b"/chat", first: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes, dict[str, str], bytes]:
    """Connect through the proxy and send a handshake (and `first` bytes in the same write).

    Returns the streams, the response's status line and headers, and the key that was sent.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16))
    writer.write(
        b"GET " + path + b" HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n" + first
    )
    status, headers = await asyncio.wait_for(read_head(reader), 5.0)
    return reader, writer, status, headers, key
