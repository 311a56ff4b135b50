"""The span exporter's collector connection: kept open between POSTs, and made afresh when the
collector closes it, answers without a length, or takes too long."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from gossamer.proxy.export_http import CollectorConnection


@dataclass
class Collector:
    """A real HTTP/1.1 server on port 0 that counts connections and answers each POST."""

    answer: bytes = b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}"
    close_after_each: bool = False
    delay: float = 0.0
    connections: int = 0
    bodies: list[bytes] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                self.bodies.append(await reader.readexactly(length))
                await asyncio.sleep(self.delay)
                writer.write(self.answer)
                await writer.drain()
                if self.close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    found = Collector()
    server = await asyncio.start_server(found.handle, "127.0.0.1", 0)
    found.port = server.sockets[0].getsockname()[1]
    async with server:
        yield found


async def test_posts_share_one_connection(collector: Collector) -> None:
    connection = CollectorConnection()
    url = f"http://127.0.0.1:{collector.port}/api/v2/spans"
    for n in range(5):
        assert await connection.post(url, b"[%d]" % n, "application/json", 5.0) == 202
    assert collector.bodies == [b"[0]", b"[1]", b"[2]", b"[3]", b"[4]"]
    assert (collector.connections, connection.opened) == (1, 1)
    connection.close()


async def test_a_collector_that_closes_gets_each_post_once_on_a_new_connection(
    collector: Collector,
) -> None:
    collector.close_after_each = True
    connection = CollectorConnection()
    url = f"http://127.0.0.1:{collector.port}/"
    for _ in range(3):
        assert await connection.post(url, b"[]", "application/json", 5.0) == 202
        await asyncio.sleep(0.05)  # the server's close reaches us, or the next POST finds it
    assert len(collector.bodies) == 3
    assert collector.connections == 3
    connection.close()


async def test_answers_without_a_length_and_timeouts_close_the_connection(
    collector: Collector,
) -> None:
    collector.answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
    connection = CollectorConnection()
    url = f"http://127.0.0.1:{collector.port}/"
    assert await connection.post(url, b"[]", "application/json", 5.0) == 200
    assert await connection.post(url, b"[]", "application/json", 5.0) == 200
    assert connection.opened == 2
    collector.delay = 1.0
    with pytest.raises(TimeoutError):
        await connection.post(url, b"[]", "application/json", 0.2)
    collector.delay = 0.0
    collector.answer = b"HTTP/1.1 204 No Content\r\n\r\n"
    # The late answer to the timed-out POST is never read as this one's.
    assert await connection.post(url, b"[]", "application/json", 5.0) == 204
    assert connection.opened == 4
    connection.close()
