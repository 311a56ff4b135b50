"""ASGI apps on uvicorn: each request's task carries its own trace to httpx.AsyncClient and
aiohttp calls, and a Starlette endpoint run in a worker thread carries it to urllib."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gossamer import tracehook

from .recorder import Recorder

Call = Callable[[str], Awaitable[None]]


async def call_with_httpx(url: str) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        (await client.get(url)).raise_for_status()


async def call_with_aiohttp(url: str) -> None:
    async with (
        aiohttp.ClientSession(headers={"X-Request-Id": "session-default"}) as session,
        session.get(url) as answer,
    ):
        assert answer.status == 200


CALLS: dict[str, Call] = {"httpx": call_with_httpx, "aiohttp": call_with_aiohttp}


def asgi_app(recorder: Recorder, barrier: asyncio.Barrier | None) -> Any:
    """GET /CLIENT?id=ID calls the recorder's /ID with that async client (after every other
    request with `together` has arrived)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        query = parse_qs(scope["query_string"].decode())
        if barrier is not None and "together" in query:
            await asyncio.wait_for(barrier.wait(), 10)  # every request is in flight at once
        await CALLS[scope["path"].lstrip("/")](f"{recorder.url}/{query['id'][0]}")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


@asynccontextmanager
async def uvicorn_serving(app: Any) -> AsyncIterator[str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and not serving.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


def trace_headers(trace: str) -> dict[str, str]:
    return {"traceparent": f"00-{trace}-{'b' * 16}-01", "x-request-id": trace}


@pytest.mark.parametrize("client", sorted(CALLS))
async def test_concurrent_tasks_each_carry_their_own_trace(
    hook: tracehook.Installation, recorder: Recorder, client: str
) -> None:
    count = 6
    ids = [f"{i:032x}" for i in range(100, 100 + count)]
    async with (
        uvicorn_serving(asgi_app(recorder, asyncio.Barrier(count))) as url,
        httpx.AsyncClient(base_url=url, timeout=20) as http,
    ):
        answers = await asyncio.gather(
            *(
                http.get(f"/{client}", params={"id": t, "together": "1"}, headers=trace_headers(t))
                for t in ids
            )
        )
        assert [a.status_code for a in answers] == [204] * count
        untraced = await http.get(f"/{client}", params={"id": "untraced"})
        assert untraced.status_code == 204
    for trace in ids:
        got = recorder.headers(f"/{trace}")
        assert got["traceparent"] == f"00-{trace}-{'b' * 16}-01"
        # A session's default header is the app's own: it is not replaced.
        expected_id = "session-default" if client == "aiohttp" else trace
        assert got["x-request-id"] == expected_id
    assert "traceparent" not in recorder.headers("/untraced")


async def test_a_starlette_endpoint_in_a_worker_thread_carries_the_trace(
    hook: tracehook.Installation, recorder: Recorder
) -> None:
    def endpoint(request: Request) -> PlainTextResponse:
        with urllib.request.urlopen(f"{recorder.url}/starlette", timeout=5) as answer:
            answer.read()
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", endpoint)])
    async with uvicorn_serving(app) as url, httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(url, headers=trace_headers("c" * 32))
        assert answer.status_code == 200
    assert recorder.headers("/starlette")["traceparent"] == f"00-{'c' * 32}-{'b' * 16}-01"
