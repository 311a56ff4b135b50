"""A kept-alive HTTP/1.1 connection for POSTing telemetry (spans) to one collector.

A span exporter POSTs a batch every flush interval. On a connection of its own each POST to an
https collector (the control plane's receiver, by default) paid a full TLS handshake: a fifth of
a busy gateway's CPU. This keeps one connection to the collector and reuses it while the server
keeps it open and frames its answers with a length; anything else closes it.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Final
from urllib.parse import urlsplit

MAX_RESPONSE_HEAD: Final = 64 * 1024
"""A collector's status line and headers, at most."""
MAX_RESPONSE_BODY: Final = 64 * 1024
"""A body read to keep the connection; a longer one closes it instead."""


class CollectorConnection:
    """One connection to one collector at a time; not for concurrent use (one exporter task)."""

    def __init__(self) -> None:
        self._key: tuple[str, str, int] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.opened = 0
        """Connections opened so far (for tests and /stats)."""

    def __repr__(self) -> str:
        state = "open" if self._writer is not None else "closed"
        return f"<CollectorConnection {state} to {self._key}, {self.opened} opened>"

    async def post(
        self,
        url: str,
        body: bytes,
        content_type: str,
        timeout: float,
        *,
        token: str = "",
        context: ssl.SSLContext | None = None,
    ) -> int:
        """POST `body` (with `token` as a bearer token, `context` for https); the answer's
        status. Raises OSError, TimeoutError or ValueError when there is none in `timeout`.

        A kept connection the collector closed while idle is noticed when the POST finds no
        answer on it: the POST is then made once more on a new connection.
        """
        parts = urlsplit(url)
        https = parts.scheme == "https"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if https else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {parts.netloc}\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\nuser-agent: gossamer-proxy\r\n"
            + (f"authorization: Bearer {token}\r\n" if token else "")
            + "\r\n"
        ).encode("latin-1")
        key = (parts.scheme, host, port)
        try:
            async with asyncio.timeout(timeout):
                reused = self._key == key and self._writer is not None
                if not reused:
                    await self._open(key, https, context)
                try:
                    return await self._exchange(head + body)
                except (OSError, ValueError, asyncio.IncompleteReadError):
                    self.close()
                    if not reused:
                        raise
                await self._open(key, https, context)
                return await self._exchange(head + body)
        except BaseException:
            # A timeout or a failure leaves an answer half read, or none: never reuse that.
            self.close()
            raise

    def close(self) -> None:
        """Close the kept connection, if any."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        self._key = None

    async def _open(
        self, key: tuple[str, str, int], https: bool, context: ssl.SSLContext | None
    ) -> None:
        self.close()
        _, host, port = key
        self._reader, self._writer = await asyncio.open_connection(
            host,
            port,
            ssl=(context or ssl.create_default_context()) if https else None,
            limit=MAX_RESPONSE_HEAD,
        )
        self._key = key
        self.opened += 1

    async def _exchange(self, request: bytes) -> int:
        reader, writer = self._reader, self._writer
        assert reader is not None and writer is not None
        writer.write(request)
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionResetError("the collector closed the connection")
        fields = status_line.split(b" ", 2)
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
            raise ValueError(f"not an HTTP response: {status_line[:80]!r}")
        status = int(fields[1])
        length: int | None = None
        keep = fields[0] == b"HTTP/1.1"
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length" and value.strip().isdigit():
                length = int(value.strip())
            elif name == b"connection" and b"close" in value.lower():
                keep = False
            elif name == b"transfer-encoding":
                keep = False  # chunked answers are not worth parsing here: start afresh
        if status in (204, 304) or 100 <= status < 200:
            length = 0
        if length is None or length > MAX_RESPONSE_BODY:
            keep = False
        elif length:
            await reader.readexactly(length)
        if not keep:
            self.close()
        return status
