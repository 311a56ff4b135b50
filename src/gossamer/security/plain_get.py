"""GET over plain HTTP/1.1 through an HTTP proxy, without an HTTP client library.

A sidecar fetches a `jwksUri` of the mesh (`http://auth-svc...`) through its own outbound
listener. httpx would do, but importing it costs a sidecar a third of its start-up CPU, and
every sidecar of a namespace with a RequestAuthentication makes this one request.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024


class HttpGetError(Exception):
    """The answer was not a 2xx with a body we could read; the message says what it was."""


async def get_via_proxy(url: str, proxy: str, timeout: float, max_body: int) -> bytes:
    """The body of `GET url`, asked of the HTTP proxy at `proxy` (absolute-form target)."""
    target = urlsplit(url)
    if target.scheme != "http":
        raise ValueError(f"{url}: only http:// goes through the proxy this way")
    via = urlsplit(proxy)
    request = (
        f"GET {url} HTTP/1.1\r\nhost: {target.netloc}\r\naccept: application/json\r\n"
        "connection: close\r\nuser-agent: gossamer-proxy\r\n\r\n"
    ).encode("latin-1")
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(
            via.hostname or "127.0.0.1", via.port or 80, limit=MAX_HEAD
        )
        try:
            writer.write(request)
            await writer.drain()
            return await _read_answer(reader, max_body)
        finally:
            writer.close()


async def _read_answer(reader: asyncio.StreamReader, max_body: int) -> bytes:
    status_line = await reader.readline()
    fields = status_line.split(b" ", 2)
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/1.") or not fields[1].isdigit():
        raise HttpGetError(f"not an HTTP answer: {status_line[:80]!r}")
    status = int(fields[1])
    length: int | None = None
    chunked = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    if not 200 <= status < 300:
        raise HttpGetError(f"answered {status}")
    if chunked:
        return await _read_chunks(reader, max_body)
    if length is not None:
        if length > max_body:
            raise HttpGetError(f"the body is larger than {max_body} bytes")
        return await reader.readexactly(length)
    body = await reader.read(max_body + 1)  # delimited by the close
    while body and len(body) <= max_body:
        more = await reader.read(max_body + 1 - len(body))
        if not more:
            break
        body += more
    if len(body) > max_body:
        raise HttpGetError(f"the body is larger than {max_body} bytes")
    return body


async def _read_chunks(reader: asyncio.StreamReader, max_body: int) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readline()
        size = int(size_line.split(b";", 1)[0].strip() or b"x", 16)
        if size == 0:
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)  # the chunk's CRLF
        if len(body) > max_body:
            raise HttpGetError(f"the body is larger than {max_body} bytes")
