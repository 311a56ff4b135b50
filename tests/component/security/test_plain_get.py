"""A sidecar's JWKS fetch through its own outbound listener, without httpx: the request line
it sends to the proxy, and the answers it reads (length, chunks, close) or refuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from gossamer.security.plain_get import HttpGetError, get_via_proxy

JWKS = b'{"keys": []}'


@dataclass
class FakeProxy:
    """A real server on port 0 standing in for the proxy: records request heads, answers."""

    answer: bytes = b""
    heads: list[bytes] = field(default_factory=list)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(self.answer)
        await writer.drain()
        writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[FakeProxy]:
    found = FakeProxy()
    server = await asyncio.start_server(found.handle, "127.0.0.1", 0)
    found.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield found


URL = "http://auth-svc.greencompute.svc.cluster.local:8080/.well-known/jwks.json"


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n" + JWKS,
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n"
        + JWKS[:5]
        + b"\r\n7\r\n"
        + JWKS[5:]
        + b"\r\n0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n" + JWKS,
    ],
    ids=["length", "chunked", "close"],
)
async def test_the_key_set_is_read_however_it_is_framed(proxy: FakeProxy, answer: bytes) -> None:
    proxy.answer = answer
    assert await get_via_proxy(URL, proxy.url, 5.0, 1024) == JWKS
    [head] = proxy.heads
    assert head.startswith(f"GET {URL} HTTP/1.1\r\n".encode())
    assert b"host: auth-svc.greencompute.svc.cluster.local:8080\r\n" in head


async def test_an_error_status_or_a_huge_body_is_refused(proxy: FakeProxy) -> None:
    proxy.answer = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
    with pytest.raises(HttpGetError, match="answered 503"):
        await get_via_proxy(URL, proxy.url, 5.0, 1024)
    proxy.answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n" + b"x" * 5000
    with pytest.raises(HttpGetError, match="larger than 1024"):
        await get_via_proxy(URL, proxy.url, 5.0, 1024)
    proxy.answer = b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 5000
    with pytest.raises(HttpGetError, match="larger than 1024"):
        await get_via_proxy(URL, proxy.url, 5.0, 1024)
    proxy.answer = b"SSH-2.0-OpenSSH\r\n"
    with pytest.raises(HttpGetError, match="not an HTTP answer"):
        await get_via_proxy(URL, proxy.url, 5.0, 1024)
