"""Pipelining edge cases: requests answered at once by the proxy in the middle of a pipeline,
and a broken request behind good ones (they are answered as usual, then it is refused and the
connection closes; an upstream attempt it had begun is given up)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import httptools
import pytest

from gossamer.snapshot import DirectResponse, Route, RouteMatch, Snapshot, StringMatch

from .backend import Backend
from .harness import Running, cluster, exchange, snapshot, to
from .waiting import eventually

Run = Callable[[Snapshot], Awaitable[Running]]
SLOW_FIRST = b"GET /first HTTP/1.1\r\nHost: a\r\nx-delay: 0.05\r\n\r\n"
LOCAL = Route(
    name="local",
    match=RouteMatch(path=StringMatch(kind="exact", value="/local")),
    direct_response=DirectResponse(status=203, body="here"),
)


class Responses:
    """Collects the responses in a byte stream, as a client would parse them."""

    def __init__(self, raw: bytes) -> None:
        self.statuses: list[int] = []
        self.bodies: list[bytes] = []
        self.parser = httptools.HttpResponseParser(self)
        self.parser.feed_data(raw)

    def on_headers_complete(self) -> None:
        self.statuses.append(self.parser.get_status_code())
        self.bodies.append(b"")

    def on_body(self, body: bytes) -> None:
        self.bodies[-1] += body


@pytest.mark.parametrize(
    "broken",
    [
        b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nx-bad : 1\r\n\r\n",
        b"POST /second HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["bad method", "bad header", "bad chunk in a queued request's body"],
)
async def test_requests_before_a_broken_one_get_their_own_answers(
    broken: bytes, backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    responses = Responses(await exchange(proxy.port, SLOW_FIRST + broken))
    assert responses.statuses == [200, 400]
    assert json.loads(responses.bodies[0])["target"] == "/first"
    assert [r.target for r in backend.requests] == ["/first"]


async def test_bytes_after_a_request_that_asked_to_close_are_ignored(
    backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    raw = await exchange(
        proxy.port, b"GET /only HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /x HTT"
    )
    responses = Responses(raw)
    assert responses.statuses == [200]
    assert json.loads(responses.bodies[0])["target"] == "/only"


async def test_a_body_that_goes_bad_midway_frees_its_upstream_connection(
    backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    state = proxy.proxy.clusters["one"]
    await eventually(lambda: backend.connections == 1, what="request on its way upstream")
    writer.write(b"zz\r\n")
    raw = await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    assert raw.startswith(b"HTTP/1.1 400 ")
    # The upstream still waits for the body; the proxy must not hold the connection for it.
    await eventually(lambda: state.counters.connections == 0, what="upstream connection closed")


async def test_a_pipelined_request_answered_at_once_keeps_the_pipeline_going(
    backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([LOCAL, to("one")], [cluster("one", backend.port)]))
    raw = await exchange(
        proxy.port,
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /local HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    responses = Responses(raw)
    assert responses.statuses == [200, 203, 200]
    assert json.loads(responses.bodies[2])["target"] == "/last"
    await eventually(lambda: proxy.proxy.active_requests == 0, what="requests counted out")


async def test_a_long_pipeline_of_local_answers_does_not_exhaust_the_stack(
    backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([LOCAL, to("one")], [cluster("one", backend.port)]))
    many = 3000  # Each would be a few frames deeper than the last, were they nested.
    raw = await exchange(
        proxy.port,
        SLOW_FIRST
        + b"GET /local HTTP/1.1\r\nHost: a\r\n\r\n" * many
        + b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        timeout=20.0,
    )
    responses = Responses(raw)
    assert responses.statuses == [200] + [203] * many + [200]
    assert proxy.proxy.stats.counters.get("gossamer_internal_errors_total", 0) == 0


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_large_body_queued_behind_a_slow_request_reaches_the_upstream_whole(
    chunked: bool, backend: Backend, run_proxy: Run
) -> None:
    # Larger than max_request_body_buffer: too large to keep for a retry, but it must still be
    # held (reading paused) until its request's turn comes.
    body = b"0123456789" * 10_000
    if chunked:
        framing = b"Transfer-Encoding: chunked\r\n\r\n"
        framed = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
    else:
        framing = b"Content-Length: %d\r\n\r\n" % len(body)
        framed = body
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    slow = b"GET /slow HTTP/1.1\r\nHost: a\r\nx-delay: 0.3\r\n\r\n"
    post = b"POST /upload HTTP/1.1\r\nHost: a\r\nConnection: close\r\n" + framing + framed
    responses = Responses(await exchange(proxy.port, slow + post))
    assert responses.statuses == [200, 200]
    assert [r.target for r in backend.requests] == ["/slow", "/upload"]
    assert backend.requests[1].body == body
