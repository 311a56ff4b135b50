"""http.server and wsgiref apps: the trace of the request a thread handles reaches its calls
through urllib, http.client, requests and httpx, and only its calls."""

from __future__ import annotations

import http.client
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest
import requests

from gossamer import tracehook

from .recorder import Recorder

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = f"00-{TRACE}-b7ad6b7169203331-01"
INCOMING = {
    "traceparent": PARENT,
    "tracestate": "vendor=1",
    "x-b3-traceid": TRACE,
    "x-b3-spanid": "b7ad6b7169203331",
    "x-b3-sampled": "1",
    "x-request-id": "req-1",
}


def call_with_urllib(url: str, headers: dict[str, str]) -> None:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as answer:
        answer.read()


def call_with_http_client(url: str, headers: dict[str, str]) -> None:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=5)
    try:
        connection.request("GET", parts.path, headers=headers)
        connection.getresponse().read()
    finally:
        connection.close()


def call_with_requests(url: str, headers: dict[str, str]) -> None:
    requests.get(url, headers=headers, timeout=5).raise_for_status()


def call_with_httpx(url: str, headers: dict[str, str]) -> None:
    with httpx.Client(timeout=5) as client:
        client.get(url, headers=headers).raise_for_status()


CLIENTS: dict[str, Callable[[str, dict[str, str]], None]] = {
    "urllib": call_with_urllib,
    "http.client": call_with_http_client,
    "requests": call_with_requests,
    "httpx": call_with_httpx,
}


@contextmanager
def app_server(recorder: Recorder, barrier: threading.Barrier | None = None) -> Iterator[str]:
    """An http.server app: GET /CLIENT?id=ID calls the recorder's /ID with that client; a
    `mine=1` makes it send a traceparent of its own."""

    class App(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            own = (
                {"TraceParent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
                if "mine" in query
                else {}
            )
            if barrier is not None:
                barrier.wait(10)  # every request is being handled at once
            CLIENTS[parts.path.lstrip("/")](f"{recorder.url}/{query['id'][0]}", own)
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), App)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def forwarded(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k in INCOMING}


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_the_incoming_trace_headers_reach_the_apps_call(
    hook: tracehook.Installation, recorder: Recorder, client: str
) -> None:
    with app_server(recorder) as app:
        httpx.get(f"{app}/{client}", params={"id": "traced"}, headers=INCOMING, timeout=10)
        httpx.get(f"{app}/{client}", params={"id": "untraced"}, timeout=10)
        httpx.get(
            f"{app}/{client}", params={"id": "own", "mine": "1"}, headers=INCOMING, timeout=10
        )
    assert forwarded(recorder.headers("/traced")) == INCOMING
    assert forwarded(recorder.headers("/untraced")) == {}
    # The app's own traceparent stays; what it did not set is added.
    own = recorder.headers("/own")
    assert own["traceparent"] == "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    assert own["x-request-id"] == "req-1"
    assert list(own).count("traceparent") == 1


def test_concurrent_requests_each_carry_their_own_trace(
    hook: tracehook.Installation, recorder: Recorder
) -> None:
    count = 8
    ids = [f"{i:032x}" for i in range(1, count + 1)]
    errors: list[BaseException] = []

    def one(trace: str) -> None:
        try:
            headers = {"traceparent": f"00-{trace}-{'a' * 16}-01", "x-request-id": trace}
            answer = httpx.get(f"{app}/urllib", params={"id": trace}, headers=headers, timeout=20)
            answer.raise_for_status()
        except BaseException as error:  # reported by the test thread
            errors.append(error)

    with app_server(recorder, threading.Barrier(count)) as app:
        callers = [threading.Thread(target=one, args=(trace,)) for trace in ids]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(30)
    assert errors == []
    for trace in ids:
        got = recorder.headers(f"/{trace}")
        assert got["traceparent"] == f"00-{trace}-{'a' * 16}-01"
        assert got["x-request-id"] == trace


def test_a_kept_alive_connections_next_request_does_not_inherit_the_trace(
    hook: tracehook.Installation, recorder: Recorder
) -> None:
    with app_server(recorder) as app, httpx.Client(base_url=app, timeout=10) as client:
        client.get("/urllib", params={"id": "first"}, headers=INCOMING)
        client.get("/urllib", params={"id": "second"})
    assert forwarded(recorder.headers("/first")) == INCOMING
    assert forwarded(recorder.headers("/second")) == {}


def test_without_the_hook_nothing_is_forwarded(recorder: Recorder) -> None:
    with app_server(recorder) as app:
        httpx.get(f"{app}/urllib", params={"id": "plain"}, headers=INCOMING, timeout=10)
    assert forwarded(recorder.headers("/plain")) == {}


def test_a_wsgiref_app_forwards_too(hook: tracehook.Installation, recorder: Recorder) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        call_with_urllib(f"{recorder.url}/{environ['QUERY_STRING']}", {})
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        httpx.get(url + "?wsgi-traced", headers=INCOMING, timeout=10)
        httpx.get(url + "?wsgi-untraced", timeout=10)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert forwarded(recorder.headers("/wsgi-traced")) == INCOMING
    assert forwarded(recorder.headers("/wsgi-untraced")) == {}


def test_a_werkzeug_app_forwards_too(hook: tracehook.Installation, recorder: Recorder) -> None:
    from werkzeug import serving  # noqa: PLC0415 - schemathesis, a dev dependency, brings it

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        call_with_requests(f"{recorder.url}/{environ['QUERY_STRING']}", {})
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = serving.make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        httpx.get(url + "?werkzeug-traced", headers=INCOMING, timeout=10)
        httpx.get(url + "?werkzeug-untraced", timeout=10)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert forwarded(recorder.headers("/werkzeug-traced")) == INCOMING
    assert forwarded(recorder.headers("/werkzeug-untraced")) == {}
