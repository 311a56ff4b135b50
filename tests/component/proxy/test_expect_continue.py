"""Expect: 100-continue: a client that waits for 100 before its body is never left waiting,
whether or not the upstream sends a 100 of its own, and never hears two."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from gossamer.snapshot import Route, RouteMatch, Snapshot, StringMatch, WeightedCluster

from .backend import Backend
from .harness import Running, cluster, read_response, snapshot, to
from .raw_upstream import serving
from .websocket import read_head

Run = Callable[[Snapshot], Awaitable[Running]]
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def expecting(body: bytes, path: bytes = b"/upload") -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )


async def send_after_continue(
    port: int, body: bytes, path: bytes = b"/upload"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a head with Expect: 100-continue, wait for the 100, then send the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(expecting(body, path))
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    assert interim == CONTINUE
    writer.write(body)
    return reader, writer


async def test_the_client_hears_100_when_the_upstream_sends_none(
    backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    reader, writer = await send_after_continue(proxy.port, b"hello")
    status, _, body = await asyncio.wait_for(read_response(reader), 5.0)
    assert (status, json.loads(body)["body"]) == (200, "hello")
    # The connection lives on, and a second such request works the same.
    writer.write(expecting(b"again"))
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0) == CONTINUE
    writer.write(b"again")
    status, _, body = await asyncio.wait_for(read_response(reader), 5.0)
    assert (status, json.loads(body)["body"]) == (200, "again")
    writer.close()
    assert backend.requests[0].header("expect") == "100-continue"


async def test_the_upstreams_own_100_is_not_passed_on_a_second_time(run_proxy: Run) -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                _, headers = await read_head(reader)
            except asyncio.IncompleteReadError:
                break
            if headers.get("expect") == "100-continue":
                writer.write(CONTINUE)
            body = await reader.readexactly(int(headers["content-length"]))
            writer.write(
                b"HTTP/1.1 201 Created\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
            )

    async with serving(upstream) as port:
        proxy = await run_proxy(snapshot([to("x")], [cluster("x", port)]))
        reader, writer = await send_after_continue(proxy.port, b"payload")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
        assert head.startswith(b"HTTP/1.1 201 "), head
        assert await reader.readexactly(7) == b"payload"
        # Pooled this time: the upstream connection is ready at once.
        reader, writer2 = await send_after_continue(proxy.port, b"second")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
        assert head.startswith(b"HTTP/1.1 201 "), head
        assert await reader.readexactly(6) == b"second"
        writer.close()
        writer2.close()


async def test_a_local_answer_comes_without_100_and_closes(
    backend: Backend, run_proxy: Run
) -> None:
    route = Route(
        name="only-api",
        match=RouteMatch(path=StringMatch(kind="prefix", value="/api")),
        clusters=(WeightedCluster(cluster="one"),),
    )
    proxy = await run_proxy(snapshot([route], [cluster("one", backend.port)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(expecting(b"never sent", b"/elsewhere"))
    raw = await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    assert raw.startswith(b"HTTP/1.1 404 ")
    assert b"connection: close" in raw and b"100 Continue" not in raw
    assert backend.requests == []


async def test_an_http10_expectation_is_ignored(backend: Backend, run_proxy: Run) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"POST /old HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi")
    raw = await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200 ") and b"100 Continue" not in raw
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["body"] == "hi"
