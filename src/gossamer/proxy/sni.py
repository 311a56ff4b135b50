"""The server name (SNI) of a TLS ClientHello, read from the first bytes of a connection.

Sans-IO: `read_sni(data)` is given what the client sent so far and says whether more is needed,
whether the bytes are not a TLS ClientHello at all, or which name the client asked for (""
when it names none). The ClientHello may span several TLS records; it is read up to
MAX_HELLO_BYTES, past which the connection is not TLS as far as routing is concerned.
Nothing is decrypted: a ClientHello is plaintext (RFC 8446, section 4.1.2; RFC 6066, section 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_HELLO_BYTES: Final = 16 * 1024 + 5
"""A ClientHello this large (with its record headers) is refused: it fills one full record."""
_MAX_RECORD: Final = 2**14
"""The largest plaintext record (RFC 8446, section 5.1)."""
_HANDSHAKE_RECORD: Final = 0x16
_CLIENT_HELLO: Final = 0x01
_SERVER_NAME_EXTENSION: Final = 0x0000
_HOST_NAME: Final = 0x00


@dataclass(frozen=True, slots=True)
class SniResult:
    """What the bytes so far say: `more` (need more bytes), `tls` false (not a ClientHello),
    or the server name the client asked for ("" for none)."""

    more: bool = False
    tls: bool = True
    server_name: str = ""


NEED_MORE: Final = SniResult(more=True)
NOT_TLS: Final = SniResult(tls=False)


def read_sni(data: bytes) -> SniResult:
    """The SNI of the ClientHello at the start of `data` (see the module docstring)."""
    hello = _handshake(data)
    if isinstance(hello, SniResult):
        return hello
    try:
        return SniResult(server_name=_server_name(hello))
    except (IndexError, ValueError):
        return NOT_TLS


def _handshake(data: bytes) -> bytes | SniResult:
    """The ClientHello message's body, joined from the records it spans."""
    if data and data[0] != _HANDSHAKE_RECORD:
        return NOT_TLS
    joined = bytearray()
    offset = 0
    while True:
        if len(joined) >= 4:
            if joined[0] != _CLIENT_HELLO:
                return NOT_TLS
            length = int.from_bytes(joined[1:4], "big")
            if length + 4 + 5 > MAX_HELLO_BYTES:
                return NOT_TLS
            if len(joined) >= 4 + length:
                return bytes(joined[4 : 4 + length])
        if len(data) < offset + 5:
            return NEED_MORE if len(data) < MAX_HELLO_BYTES else NOT_TLS
        if data[offset] != _HANDSHAKE_RECORD:
            return NOT_TLS
        size = int.from_bytes(data[offset + 3 : offset + 5], "big")
        if size == 0 or size > _MAX_RECORD:
            return NOT_TLS
        if len(data) < offset + 5 + size:
            return NEED_MORE
        joined += data[offset + 5 : offset + 5 + size]
        offset += 5 + size


def _server_name(hello: bytes) -> str:
    """The host_name of the server_name extension, or "" without one; ValueError when the
    message is malformed (IndexError when it is cut short)."""
    at = 2 + 32  # client version, random
    at += 1 + hello[at]  # session id
    at += 2 + int.from_bytes(hello[at : at + 2], "big")  # cipher suites
    at += 1 + hello[at]  # compression methods
    if at == len(hello):
        return ""  # no extensions
    end = at + 2 + int.from_bytes(hello[at : at + 2], "big")
    if end > len(hello):
        raise ValueError("extensions past the message")
    at += 2
    while at + 4 <= end:
        kind = int.from_bytes(hello[at : at + 2], "big")
        size = int.from_bytes(hello[at + 2 : at + 4], "big")
        body = hello[at + 4 : at + 4 + size]
        if len(body) != size:
            raise ValueError("an extension past the message")
        if kind == _SERVER_NAME_EXTENSION:
            return _host_name(body)
        at += 4 + size
    return ""


def _host_name(body: bytes) -> str:
    at = 2  # the list's length
    while at + 3 <= len(body):
        kind = body[at]
        size = int.from_bytes(body[at + 1 : at + 3], "big")
        name = body[at + 3 : at + 3 + size]
        if len(name) != size:
            raise ValueError("a server name past the extension")
        if kind == _HOST_NAME:
            return name.decode("ascii").lower().rstrip(".")
        at += 3 + size
    return ""
