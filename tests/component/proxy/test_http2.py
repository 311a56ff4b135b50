"""HTTP/2 from clients (h2c with prior knowledge, h2 over TLS), HTTP/1.1 to the upstreams."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import msgspec
import pytest

from gossamer.proxy.http2_connection import Http2Connection
from gossamer.snapshot import (
    Certificate,
    Fault,
    Listener,
    ListenerLimits,
    ListenerTls,
    RetryPolicy,
    Snapshot,
)

from .backend import Backend
from .certificates import self_signed
from .h2client import H2Client
from .harness import Running, cluster, snapshot, to
from .waiting import eventually

Run = Callable[[Snapshot], Awaitable[Running]]

CURL = shutil.which("curl")


def plain(backend: Backend, **route: object) -> Snapshot:
    return snapshot([to("one", **route)], [cluster("one", backend.port)])


@pytest.mark.skipif(CURL is None, reason="needs curl")
async def test_curl_with_prior_knowledge_gets_an_answer(backend: Backend, run_proxy: Run) -> None:
    proxy = await run_proxy(plain(backend))
    assert CURL is not None
    process = await asyncio.create_subprocess_exec(
        CURL, "-sS", "--http2-prior-knowledge", "-D", "-", "-H", "x-test: yes",
        f"{proxy.url}/hello?x=1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err
    head, _, body = out.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/2 200")
    received = json.loads(body)
    assert received["target"] == "/hello?x=1"
    assert ["x-test", "yes"] in received["headers"]
    assert ["host", f"127.0.0.1:{proxy.port}"] in received["headers"]
    [seen] = backend.requests
    assert seen.header("x-forwarded-for") == "127.0.0.1"


async def test_many_streams_on_one_connection(backend: Backend, run_proxy: Run) -> None:
    proxy = await run_proxy(plain(backend))
    client = await H2Client.connect(proxy.port)
    try:
        streams = {
            client.request(f"/n/{i}", method="POST", body=f"body {i}".encode() * 50): i
            for i in range(20)
        }
        for stream_id, i in streams.items():
            answer = await client.answer(stream_id)
            assert answer.status == 200, answer
            received = json.loads(answer.body)
            assert received["target"] == f"/n/{i}"
            assert received["body"] == f"body {i}" * 50
    finally:
        await client.close()


async def test_a_retry_route_retries_over_http2(backend: Backend, run_proxy: Run) -> None:
    retries = RetryPolicy(attempts=2, retry_on=("5xx",), backoff_base=0.001)
    proxy = await run_proxy(plain(backend, retries=retries))
    backend.fail_next = [503, 503]
    client = await H2Client.connect(proxy.port)
    try:
        answer = await client.get("/flaky")
    finally:
        await client.close()
    assert answer.status == 200
    assert len(backend.requests) == 3


async def test_a_fault_answers_over_http2_and_is_recorded(backend: Backend, run_proxy: Run) -> None:
    proxy = await run_proxy(plain(backend, fault=Fault(abort_status=418)))
    client = await H2Client.connect(proxy.port)
    try:
        answer = await client.get("/")
    finally:
        await client.close()
    assert answer.status == 418
    assert answer.headers["x-gossamer-reason"] == "fault injected"
    assert bytes(answer.body) == b"fault injected\n"
    assert backend.requests == []
    assert 'response_code="418",response_flags="FI"} 1' in proxy.proxy.stats.prometheus()


async def test_a_route_timeout_answers_504_on_its_stream(backend: Backend, run_proxy: Run) -> None:
    proxy = await run_proxy(plain(backend, timeout=0.2))
    log = io.StringIO()
    proxy.proxy.listeners["outbound"].runtime.log = log
    client = await H2Client.connect(proxy.port)
    try:
        slow = client.request("/slow", headers=[(b"x-delay", b"2")])
        fast = await client.get("/fast")
        answer = await client.answer(slow)
    finally:
        await client.close()
    assert (answer.status, answer.headers["x-gossamer-reason"]) == (504, "upstream timeout")
    assert fast.status == 200
    entries = {e["path"]: e for e in map(json.loads, log.getvalue().splitlines())}
    assert entries["/slow"]["protocol"] == "HTTP/2"
    assert (entries["/slow"]["response_code"], entries["/slow"]["response_flags"]) == (504, "UT")
    assert entries["/fast"]["response_code"] == 200


async def test_chunked_responses_lose_their_framing_and_keep_trailers(
    backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(plain(backend))
    client = await H2Client.connect(proxy.port)
    try:
        answer = await client.get("/", headers=[(b"x-chunked", b"1"), (b"te", b"trailers")])
    finally:
        await client.close()
    assert answer.status == 200
    assert "transfer-encoding" not in answer.headers
    assert json.loads(answer.body)["target"] == "/"
    assert answer.trailers == {"x-trailer": "done"}


async def test_a_large_body_both_ways_follows_flow_control(
    backend: Backend, run_proxy: Run
) -> None:
    # Windows far smaller than the bodies: nothing moves unless each side credits the other.
    limits = ListenerLimits(http2_stream_window=16384, http2_connection_window=65535)
    config = snapshot([to("one")], [cluster("one", backend.port)], limits=limits)
    proxy = await run_proxy(config)
    client = await H2Client.connect(proxy.port, window=16384)
    upload = bytes(range(256)) * 4096  # 1 MiB
    try:
        sent = client.request("/up", method="POST", body=upload)
        fetched = client.request("/down", headers=[(b"x-body-size", b"3000000")])
        up, down = await client.answer(sent, 30), await client.answer(fetched, 30)
    finally:
        await client.close()
    assert up.status == 200
    assert len(json.loads(up.body)["body"].encode("latin-1")) == len(upload)
    assert next(r for r in backend.requests if r.target == "/up").body == upload
    assert down.status == 200
    assert len(down.body) == 3_000_000


async def test_a_slow_reader_pauses_the_upstream_instead_of_buffering(
    backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(plain(backend))
    client = await H2Client.connect(proxy.port)
    client.auto_ack = False
    try:
        stream_id = client.request("/", headers=[(b"x-body-size", b"20000000")])
        answer = client.answers[stream_id]
        await eventually(lambda: len(answer.body) >= 65535 - 16384, what="first window")
        [connection] = next(iter(proxy.proxy.listeners.values())).connections
        assert isinstance(connection, Http2Connection)
        [stream] = connection.streams.values()
        await eventually(lambda: stream.write_paused, what="upstream paused")
        # The proxy holds at most about one upstream read beyond the client's window.
        assert len(stream.pending) < 1_000_000
        client.auto_ack = True
        client.conn.acknowledge_received_data(len(answer.body), stream_id)
        client.flush()
        await client.answer(stream_id, 60)
    finally:
        await client.close()
    assert len(answer.body) == 20_000_000


async def test_a_reset_stream_gives_back_the_window_its_held_body_took(
    backend: Backend, run_proxy: Run
) -> None:
    # During the delay the body has nowhere to go: past max_request_body_buffer the stream
    # stops crediting it back. Reset then, it must not keep that share of the connection's
    # window, or the next upload on the connection would wait forever.
    limits = ListenerLimits(max_request_body_buffer=1024, http2_connection_window=65535)
    route = to("one", fault=Fault(delay=0.3))
    proxy = await run_proxy(snapshot([route], [cluster("one", backend.port)], limits=limits))
    client = await H2Client.connect(proxy.port)
    try:
        held = client.request("/held", method="POST", body=b"h" * 40000, end=False)

        def held_back() -> int:
            return sum(
                stream.unacked
                for connection in proxy.proxy.listeners["outbound"].connections
                if isinstance(connection, Http2Connection)
                for stream in connection.streams.values()
            )

        await eventually(lambda: held_back() >= 16384, what="body held back")
        client.reset(held)
        answer = await client.get("/next", method="POST", body=b"n" * 60000)
    finally:
        await client.close()
    assert answer.status == 200
    assert [r.target for r in backend.requests] == ["/next"]


@pytest.mark.skipif(CURL is None, reason="needs curl")
async def test_drain_sends_goaway_and_finishes_streams_in_flight(
    backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(plain(backend))
    assert CURL is not None
    process = await asyncio.create_subprocess_exec(
        CURL, "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
        "-H", "x-delay: 0.5", f"{proxy.url}/slow",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await eventually(lambda: len(backend.requests) == 1, timeout=20, what="request upstream")
    await proxy.proxy.drain(10.0)
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert (process.returncode, out) == (0, b"200 2"), err


async def test_h2_over_tls_by_alpn(backend: Backend, run_proxy: Run, tmp_path: Path) -> None:
    proxy = await run_proxy(tls_gateway(backend, tmp_path))
    cert = tmp_path / "shop.example.crt"
    context = ssl.create_default_context(cafile=str(cert))
    context.set_alpn_protocols(["h2", "http/1.1"])
    context.check_hostname = False
    client = await H2Client.connect(proxy.port, tls=context)
    try:
        answer = await client.get("/secure", authority="shop.example")
    finally:
        await client.close()
    assert answer.status == 200
    assert [r.header("x-forwarded-proto") for r in backend.requests] == ["https"]
    # An HTTP/1.1 client on the same listener is still served.
    plain_context = ssl.create_default_context(cafile=str(cert))
    plain_context.check_hostname = False
    async with httpx.AsyncClient(verify=plain_context) as http1:
        response = await http1.get(f"https://127.0.0.1:{proxy.port}/")
    assert (response.status_code, response.http_version) == (200, "HTTP/1.1")


async def test_streams_of_one_connection_run_at_the_same_time(
    backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(plain(backend))
    client = await H2Client.connect(proxy.port)
    try:
        streams = [client.request(f"/{i}", headers=[(b"x-delay", b"1")]) for i in range(10)]
        # One after the other, the tenth would reach the upstream nine seconds from now.
        await eventually(lambda: len(backend.requests) == 10, timeout=5, what="all upstream")
        assert not any(client.answers[s].done.is_set() for s in streams)
        answers = [await client.answer(s) for s in streams]
    finally:
        await client.close()
    assert [a.status for a in answers] == [200] * 10
    assert backend.connections == 10


async def test_batches_of_streams_share_pooled_upstream_connections(
    backend: Backend, run_proxy: Run
) -> None:
    # Responses outrun the client's window: upstream connections are paused for one stream,
    # and must read again for the next one that takes them from the pool.
    proxy = await run_proxy(plain(backend))
    client = await H2Client.connect(proxy.port)
    try:
        for batch in range(10):
            streams = [
                client.request(f"/{batch}/{i}", headers=[(b"x-body-size", b"4000")])
                for i in range(30)
            ]
            answers = [await client.answer(s) for s in streams]
            assert [(a.status, len(a.body)) for a in answers] == [(200, 4000)] * 30
    finally:
        await client.close()
    assert backend.connections <= 30


@pytest.mark.skipif(CURL is None, reason="needs curl")
async def test_curl_over_tls_chooses_http2_by_alpn(
    backend: Backend, run_proxy: Run, tmp_path: Path
) -> None:
    proxy = await run_proxy(tls_gateway(backend, tmp_path))
    assert CURL is not None
    process = await asyncio.create_subprocess_exec(
        CURL, "-sS", "-k", "--http2", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
        f"https://127.0.0.1:{proxy.port}/",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert (process.returncode, out) == (0, b"200 2"), err


async def test_h2load_many_streams_on_few_connections(
    backend: Backend, run_proxy: Run, h2load: str
) -> None:
    proxy = await run_proxy(plain(backend))
    process = await asyncio.create_subprocess_exec(
        h2load, "-n", "2000", "-c", "4", "-m", "20", f"{proxy.url}/load",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err
    assert "2000 succeeded, 0 failed, 0 errored" in out.decode(), out.decode()
    assert "status codes: 2000 2xx" in out.decode()
    assert len(backend.requests) == 2000
    await eventually(lambda: proxy.proxy.active_requests == 0, what="all finished")


@pytest.fixture(scope="session")
def h2load() -> str:
    """h2load, from Debian's nghttp2-client, installed here when missing and run as root."""
    found = shutil.which("h2load")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "nghttp2-client"]
        if subprocess.run(install, env=environment, check=False, timeout=600).returncode:
            subprocess.run(["apt-get", "update", "-qq"], env=environment, check=True, timeout=600)
            subprocess.run(install, env=environment, check=True, timeout=600)
        found = shutil.which("h2load")
    if found is None:
        pytest.skip("needs h2load: apt-get install nghttp2-client")
    return found


def tls_gateway(backend: Backend, folder: Path) -> Snapshot:
    """A gateway listener terminating TLS with a self-signed certificate for shop.example."""
    cert, key = self_signed("shop.example", folder)
    listener = Listener(
        name="outbound", address="127.0.0.1", port=0, role="gateway", route_table="outbound",
        tls=ListenerTls(certificates=(Certificate(cert_file=str(cert), key_file=str(key)),)),
    )  # fmt: skip
    return msgspec.structs.replace(plain(backend), listeners=(listener,))
