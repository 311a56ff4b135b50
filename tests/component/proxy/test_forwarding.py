"""Requests go through the proxy to a real upstream and back, as HTTP/1.1 says they should."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import httpx
import msgspec

from gossamer.snapshot import (
    DirectResponse,
    HeaderMatch,
    HeaderOps,
    Rewrite,
    Route,
    RouteMatch,
    Snapshot,
    StringMatch,
    WeightedCluster,
)

from .backend import Backend
from .harness import Running, cluster, exchange, read_response, snapshot, to
from .raw_upstream import serving

Run = Callable[[Snapshot], Awaitable[Running]]


async def test_get_and_post_reach_the_upstream_with_forwarding_headers(
    backend: Backend, run_proxy: Run, client: httpx.AsyncClient
) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    response = await client.get(f"{proxy.url}/hello?x=1", headers={"x-custom": "yes"})
    assert response.status_code == 200
    seen = response.json()
    assert seen["target"] == "/hello?x=1"
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert headers["x-custom"] == "yes"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-request-id"]
    assert headers["traceparent"].startswith("00-") and len(headers["traceparent"]) == 55
    assert headers["x-b3-traceid"] == headers["traceparent"][3:35]
    response = await client.post(f"{proxy.url}/items", content=b"payload")
    assert response.json()["body"] == "payload"
    assert response.headers["x-backend"] == "one"


async def test_a_trace_is_continued_not_restarted(
    backend: Backend, run_proxy: Run, client: httpx.AsyncClient
) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    seen = (await client.get(proxy.url, headers={"traceparent": parent})).json()
    headers = {k.lower(): v for k, v in seen["headers"]}
    trace = headers["traceparent"].split("-")
    assert trace[1] == "0af7651916cd43dd8448eb211c80319c"
    assert trace[2] != "b7ad6b7169203331"
    assert headers["x-b3-parentspanid"] == "b7ad6b7169203331"


async def test_hop_by_hop_headers_and_those_named_in_connection_are_removed(
    backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    raw = await exchange(
        proxy.port,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, x-secret\r\nx-secret: 1\r\n"
        b"Keep-Alive: timeout=5\r\nProxy-Authorization: basic\r\nx-kept: 2\r\n\r\n",
    )
    body = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    names = {k.lower() for k, _ in body["headers"]}
    assert "x-kept" in names
    assert not names & {"x-secret", "keep-alive", "proxy-authorization"}
    assert b"connection: close" in raw.lower()


async def test_header_names_with_underscores_are_dropped_unless_the_listener_allows_them(
    backend: Backend, run_proxy: Run
) -> None:
    # A backend that reads "_" as "-" (CGI, some frameworks) would see a second framing header.
    sent = (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent_length: 50\r\n"
        b"Transfer_Encoding: chunked\r\nx_user: mallory\r\nx-user: alice\r\n"
        b"Connection: close\r\n\r\nhello"
    )
    config = snapshot([to("one")], [cluster("one", backend.port)])
    dropping = await run_proxy(config)
    assert (await exchange(dropping.port, sent)).startswith(b"HTTP/1.1 200 ")
    received = backend.requests[-1]
    assert [name for name, _ in received.headers if "_" in name] == []
    assert (received.header("x-user"), received.body) == ("alice", b"hello")
    metrics = dropping.proxy.stats.prometheus()
    assert "gossamer_dropped_headers_with_underscores_total 3" in metrics

    allow = msgspec.structs.replace(config.listeners[0], headers_with_underscores="allow")
    allowing = await run_proxy(msgspec.structs.replace(config, listeners=(allow,)))
    assert (await exchange(allowing.port, sent)).startswith(b"HTTP/1.1 200 ")
    received = backend.requests[-1]
    assert [name for name, _ in received.headers if "_" in name] == [
        "content_length",
        "transfer_encoding",
        "x_user",
    ]


async def test_keep_alive_reuses_one_upstream_connection(backend: Backend, run_proxy: Run) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    for number in range(5):
        writer.write(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % number)
        status, _, body = await read_response(reader)
        assert status == 200
        assert json.loads(body)["target"] == f"/{number}"
    writer.close()
    assert backend.connections == 1
    assert len(backend.requests) == 5


async def test_pipelined_requests_are_answered_in_order(backend: Backend, run_proxy: Run) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(
        b"GET /slow HTTP/1.1\r\nHost: a\r\nx-delay: 0.2\r\n\r\n"
        b"POST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /third HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    targets = []
    for _ in range(3):
        _, _, body = await read_response(reader)
        targets.append(json.loads(body)["target"])
    writer.close()
    assert targets == ["/slow", "/second", "/third"]


async def test_chunked_both_ways_and_trailers(backend: Backend, run_proxy: Run) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    raw = await exchange(
        proxy.port,
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nx-chunked: 1\r\n"
        b"Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    body = b""
    rest = payload
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body, rest = body + rest[:size], rest[size + 2 :]
    assert json.loads(body)["body"] == "hello world"
    assert rest.startswith(b"x-trailer: done\r\n")


async def test_http10_client_gets_a_body_delimited_by_close(
    backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    raw = await exchange(proxy.port, b"GET /old HTTP/1.0\r\nx-chunked: 1\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert json.loads(body)["target"] == "/old"


async def test_http10_keep_alive_client_is_answered_as_http10_and_kept(
    backend: Backend, run_proxy: Run
) -> None:
    # HTTP/1.0 keeps a connection only when asked; the answer must say it kept it.
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        for path in ("/first", "/second"):
            writer.write(b"GET " + path.encode() + b" HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, body = await asyncio.wait_for(read_response(reader), 5.0)
            assert status == 200
            assert headers["connection"] == "keep-alive"
            assert json.loads(body)["target"] == path
        # An upstream body of unknown length can only end with the connection.
        writer.write(b"GET /last HTTP/1.0\r\nConnection: keep-alive\r\nx-chunked: 1\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), 5.0)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    assert json.loads(body)["target"] == "/last"


async def test_http11_client_that_names_keep_alive_gets_chunked_responses(
    backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    raw = await exchange(
        proxy.port,
        b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nx-chunked: 1\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in first.lower()
    assert b"connection:" not in first.lower()
    assert rest.count(b"HTTP/1.1 200") == 1  # the second response, on the same connection


async def test_http11_request_without_host_is_refused_whatever_its_connection_header(
    backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    for connection in (b"", b"Connection: keep-alive\r\n", b"Connection: close\r\n"):
        raw = await exchange(proxy.port, b"GET / HTTP/1.1\r\n" + connection + b"\r\n")
        assert raw.startswith(b"HTTP/1.1 400"), connection
        assert b"missing host header" in raw


async def test_head_response_has_no_body_and_the_connection_lives_on(
    backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n")
    status_line = await reader.readline()
    assert b"200" in status_line
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"content-length:" in head.lower()
    writer.write(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
    status, _, body = await read_response(reader)
    writer.close()
    assert status == 200 and json.loads(body)["target"] == "/after"


async def test_absolute_form_target_routes_by_its_host(
    backend: Backend, backend2: Backend, run_proxy: Run
) -> None:
    routes = [
        Route(
            name="reviews",
            match=RouteMatch(authority=StringMatch(kind="exact", value="reviews")),
            clusters=(WeightedCluster(cluster="one"),),
        ),
        to("two"),
    ]
    proxy = await run_proxy(
        snapshot(routes, [cluster("one", backend.port), cluster("two", backend2.port)])
    )
    raw = await exchange(
        proxy.port, b"GET http://reviews/r/1 HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n"
    )
    assert b"x-backend: one" in raw
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["target"] == "/r/1"


async def test_routes_match_in_order_on_path_and_headers(
    backend: Backend, backend2: Backend, run_proxy: Run, client: httpx.AsyncClient
) -> None:
    routes = [
        Route(
            name="jason",
            match=RouteMatch(
                path=StringMatch(kind="prefix", value="/reviews"),
                headers=(
                    HeaderMatch(name="end-user", match=StringMatch(kind="exact", value="jason")),
                ),
            ),
            clusters=(WeightedCluster(cluster="two"),),
            response_headers=HeaderOps(set=(("x-route", "jason"),)),
        ),
        Route(
            name="teapot",
            match=RouteMatch(path=StringMatch(kind="exact", value="/teapot")),
            direct_response=DirectResponse(status=418, body="short and stout"),
        ),
        Route(
            name="rest",
            match=RouteMatch(path=StringMatch(kind="regex", value="/reviews/[0-9]+")),
            clusters=(WeightedCluster(cluster="one"),),
        ),
    ]
    proxy = await run_proxy(
        snapshot(routes, [cluster("one", backend.port), cluster("two", backend2.port)])
    )
    jason = await client.get(f"{proxy.url}/reviews/1", headers={"end-user": "jason"})
    assert jason.headers["x-backend"] == "two" and jason.headers["x-route"] == "jason"
    other = await client.get(f"{proxy.url}/reviews/1")
    assert other.headers["x-backend"] == "one"
    teapot = await client.get(f"{proxy.url}/teapot")
    assert (teapot.status_code, teapot.text) == (418, "short and stout")
    missing = await client.get(f"{proxy.url}/reviews/abc")
    assert missing.status_code == 404
    assert missing.headers["x-gossamer-reason"] == "no route"


async def test_weighted_split_follows_the_weights(
    backend: Backend, backend2: Backend, run_proxy: Run, client: httpx.AsyncClient
) -> None:
    route = Route(
        name="canary",
        clusters=(
            WeightedCluster(cluster="one", weight=80),
            WeightedCluster(cluster="two", weight=20),
        ),
    )
    proxy = await run_proxy(
        snapshot([route], [cluster("one", backend.port), cluster("two", backend2.port)])
    )
    results = await asyncio.gather(*(client.get(proxy.url) for _ in range(400)))
    share = sum(1 for r in results if r.headers["x-backend"] == "two") / len(results)
    assert 0.12 < share < 0.28


async def test_request_header_operations_and_rewrite(
    backend: Backend, run_proxy: Run, client: httpx.AsyncClient
) -> None:
    route = Route(
        name="rewrite",
        match=RouteMatch(path=StringMatch(kind="prefix", value="/old")),
        clusters=(WeightedCluster(cluster="one"),),
        rewrite=Rewrite(prefix="/new", authority="internal.example"),
        request_headers=HeaderOps(set=(("x-set", "1"),), add=(("x-add", "2"),), remove=("x-drop",)),
    )
    proxy = await run_proxy(snapshot([route], [cluster("one", backend.port)]))
    seen = (await client.get(f"{proxy.url}/old/page?q=1", headers={"x-drop": "gone"})).json()
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert seen["target"] == "/new/page?q=1"
    assert headers["host"] == "internal.example"
    assert headers["x-set"] == "1" and headers["x-add"] == "2"
    assert "x-drop" not in headers


async def test_response_headers_named_in_the_upstreams_connection_header_are_removed(
    run_proxy: Run,
) -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(
                b"HTTP/1.1 200 OK\r\nx-upstream-secret: 1\r\nContent-Length: 2\r\n"
                b"Connection: keep-alive, X-Upstream-Secret\r\nx-kept: 2\r\n\r\nok"
            )

    async with serving(upstream) as port:
        proxy = await run_proxy(snapshot([to("one")], [cluster("one", port)]))
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        for _ in range(2):
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            status, headers, body = await read_response(reader)
            assert (status, body) == (200, b"ok")
            assert headers["x-kept"] == "2"
            assert "x-upstream-secret" not in headers
            assert "connection" not in headers  # kept alive: nothing to say
        writer.close()
