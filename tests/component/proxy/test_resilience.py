"""Failures upstream become precise local replies, retries and ejections, never crashes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import httpx

from gossamer.snapshot import (
    ListenerLimits,
    OutlierDetection,
    PoolLimits,
    RetryPolicy,
    Snapshot,
)

from .backend import Backend
from .harness import Running, cluster, snapshot, to
from .raw_upstream import serving
from .waiting import eventually
from .websocket import read_head

Run = Callable[[Snapshot], Awaitable[Running]]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connection_refused_is_a_503_that_says_so(run_proxy: Run) -> None:
    proxy = await run_proxy(snapshot([to("gone")], [cluster("gone", closed_port())]))
    async with httpx.AsyncClient() as client:
        response = await client.get(proxy.url)
    assert response.status_code == 503
    assert response.headers["x-gossamer-reason"] == "upstream connect refused"


async def test_connect_failure_is_retried_on_another_endpoint(
    backend: Backend, run_proxy: Run
) -> None:
    retries = RetryPolicy(attempts=2, retry_on=("connect-failure",), backoff_base=0.001)
    config = snapshot(
        [to("mixed", retries=retries)],
        [cluster("mixed", closed_port(), backend.port, lb_policy="ROUND_ROBIN")],
    )
    proxy = await run_proxy(config)
    async with httpx.AsyncClient() as client:
        statuses = [(await client.get(proxy.url)).status_code for _ in range(10)]
    assert statuses == [200] * 10


async def test_a_5xx_is_retried_and_the_client_sees_the_success(
    backend: Backend, run_proxy: Run
) -> None:
    retries = RetryPolicy(attempts=2, retry_on=("5xx",), backoff_base=0.001)
    proxy = await run_proxy(snapshot([to("one", retries=retries)], [cluster("one", backend.port)]))
    backend.fail_next = [503, 500]
    async with httpx.AsyncClient() as client:
        response = await client.get(proxy.url)
    assert response.status_code == 200
    assert len(backend.requests) == 3
    metrics = (await _admin(proxy, "/stats/prometheus")).text
    assert 'gossamer_upstream_retries_total{cluster="one"} 2' in metrics


async def test_retries_exhausted_pass_the_last_answer_on(backend: Backend, run_proxy: Run) -> None:
    retries = RetryPolicy(attempts=1, retry_on=("5xx",), backoff_base=0.001)
    proxy = await run_proxy(snapshot([to("one", retries=retries)], [cluster("one", backend.port)]))
    async with httpx.AsyncClient() as client:
        response = await client.get(proxy.url, headers={"x-status": "503"})
    assert response.status_code == 503
    assert len(backend.requests) == 2
    metrics = (await _admin(proxy, "/stats/prometheus")).text
    assert 'response_code="503",response_flags="URX"' in metrics


async def test_post_is_not_retried_unless_the_route_says_so(
    backend: Backend, run_proxy: Run
) -> None:
    retries = RetryPolicy(attempts=2, retry_on=("5xx",), backoff_base=0.001)
    proxy = await run_proxy(snapshot([to("one", retries=retries)], [cluster("one", backend.port)]))
    async with httpx.AsyncClient() as client:
        response = await client.post(proxy.url, content=b"x", headers={"x-status": "500"})
    assert response.status_code == 500
    assert len(backend.requests) == 1


async def test_route_timeout_is_a_504(backend: Backend, run_proxy: Run) -> None:
    proxy = await run_proxy(snapshot([to("one", timeout=0.2)], [cluster("one", backend.port)]))
    async with httpx.AsyncClient() as client:
        response = await client.get(proxy.url, headers={"x-delay": "2"})
    assert response.status_code == 504
    assert response.headers["x-gossamer-reason"] == "upstream timeout"


async def test_per_try_timeout_retries_elsewhere(
    backend: Backend, backend2: Backend, run_proxy: Run
) -> None:
    retries = RetryPolicy(attempts=2, per_try_timeout=0.2, retry_on=("5xx",), backoff_base=0.001)
    slow_first = cluster("two", backend.port, backend2.port, lb_policy="ROUND_ROBIN")
    proxy = await run_proxy(snapshot([to("two", retries=retries, timeout=3.0)], [slow_first]))
    async with httpx.AsyncClient() as client:
        # The backend named "one" is slow for this request; the retry goes to the other.
        for _ in range(4):
            response = await client.get(proxy.url, headers={"x-delay": "0"})
            assert response.status_code == 200


async def test_a_per_try_timeout_is_retried_only_when_retry_on_says_so(
    backend: Backend, run_proxy: Run
) -> None:
    # As in Envoy: a try timed out is reset, and a reset is retried on reset, 5xx or
    # gateway-error; connect-failure alone does not cover it.
    retries = RetryPolicy(
        attempts=2, per_try_timeout=0.2, retry_on=("connect-failure",), backoff_base=0.001
    )
    proxy = await run_proxy(
        snapshot([to("one", retries=retries, timeout=5.0)], [cluster("one", backend.port)])
    )
    async with httpx.AsyncClient() as client:
        response = await client.get(proxy.url, headers={"x-delay": "1"})
    assert response.status_code == 504
    assert response.headers["x-gossamer-reason"] == "upstream per-try timeout"
    assert len(backend.requests) == 1
    assert "gossamer_upstream_retries_total" not in (await _admin(proxy, "/stats/prometheus")).text


async def test_a_stale_pooled_connection_is_retried_transparently(
    backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    async with httpx.AsyncClient() as client:
        assert (await client.get(proxy.url)).status_code == 200
        # The upstream closes every idle connection, as a server with a short keep-alive does.
        for writer in list(backend.writers):
            writer.close()
        await asyncio.sleep(0.05)
        assert (await client.get(proxy.url)).status_code == 200


async def test_pending_overflow_is_a_503_not_a_queue(backend: Backend, run_proxy: Run) -> None:
    limits = PoolLimits(max_connections=1, max_pending=1)
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port, limits=limits)]))
    async with httpx.AsyncClient() as client:
        responses = await asyncio.gather(
            *(client.get(proxy.url, headers={"x-delay": "0.3"}) for _ in range(4))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 2
    assert statuses.count(503) == 2
    overflow = next(r for r in responses if r.status_code == 503)
    assert "overflow" in overflow.headers["x-gossamer-reason"]


async def test_load_is_shed_beyond_max_concurrent_requests(
    backend: Backend, run_proxy: Run
) -> None:
    limits = ListenerLimits(max_concurrent_requests=2)
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)], limits=limits))
    async with httpx.AsyncClient() as client:
        responses = await asyncio.gather(
            *(client.get(proxy.url, headers={"x-delay": "0.3"}) for _ in range(5))
        )
    shed = [r for r in responses if r.status_code == 503]
    assert len(shed) == 3
    assert shed[0].headers["x-gossamer-reason"] == "overloaded: too many concurrent requests"


async def test_outlier_detection_ejects_a_failing_endpoint(
    backend: Backend, backend2: Backend, run_proxy: Run
) -> None:
    detection = OutlierDetection(consecutive_5xx=2, base_ejection_time=30, max_ejection_percent=50)
    pair = cluster(
        "pair", backend.port, backend2.port, lb_policy="ROUND_ROBIN", outlier_detection=detection
    )
    proxy = await run_proxy(snapshot([to("pair")], [pair]))
    backend.fail_next = [500] * 100
    async with httpx.AsyncClient() as client:
        statuses = [(await client.get(proxy.url)).status_code for _ in range(20)]
    assert statuses.count(500) == 2
    assert statuses[-10:] == [200] * 10
    clusters = (await _admin(proxy, "/clusters")).json()
    ejected = {e["address"]: e["ejected"] for e in clusters[0]["endpoints"]}
    assert ejected[f"127.0.0.1:{backend.port}"] is True


async def test_a_failure_counts_against_the_endpoint_whose_connection_answered(
    run_proxy: Run,
) -> None:
    # At max_connections a queued request takes the first connection freed, whichever endpoint
    # it had picked: the endpoint that answered is the one that failed, not the one picked.
    gate = asyncio.Event()

    async def failing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader)
            await gate.wait()
            writer.write(b"HTTP/1.1 503 Unavailable\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()

    detection = OutlierDetection(consecutive_5xx=2, base_ejection_time=30, max_ejection_percent=100)
    async with serving(failing) as one, serving(failing) as two:
        pair = cluster(
            "pair",
            one,
            two,
            lb_policy="ROUND_ROBIN",
            outlier_detection=detection,
            limits=PoolLimits(max_connections=1),
        )
        proxy = await run_proxy(snapshot([to("pair")], [pair]))
        state = proxy.proxy.clusters["pair"]
        async with httpx.AsyncClient() as client:
            # Round robin: the four requests pick each endpoint twice; one connection serves all.
            sent = [asyncio.create_task(client.get(proxy.url)) for _ in range(4)]
            await eventually(
                lambda: len(state.pending) == 3 and state.connecting == 0,
                what="three requests queued behind the first one's connection",
            )
            gate.set()
            statuses = [response.status_code for response in await asyncio.gather(*sent)]
        assert statuses == [503] * 4
        endpoints = (await _admin(proxy, "/clusters")).json()[0]["endpoints"]
    (served,) = [e for e in endpoints if e["connections"] == 1]
    (unused,) = [e for e in endpoints if e["connections"] == 0]
    assert (unused["ejected"], unused["ejections"]) == (False, 0)
    assert (served["ejected"], served["ejections"]) == (True, 2)
    assert served["active"] == unused["active"] == 0


async def test_a_new_snapshot_applies_without_dropping_the_request_in_flight(
    backend: Backend, backend2: Backend, run_proxy: Run
) -> None:
    first = snapshot([to("one")], [cluster("one", backend.port)], version="1")
    proxy = await run_proxy(first)
    async with httpx.AsyncClient() as client:
        slow = asyncio.create_task(client.get(proxy.url, headers={"x-delay": "0.3"}))
        await asyncio.sleep(0.1)
        second = snapshot([to("two")], [cluster("two", backend2.port)], version="2")
        await proxy.proxy.apply(second)
        after = await client.get(proxy.url)
        before = await slow
    assert before.status_code == 200 and before.headers["x-backend"] == "one"
    assert after.headers["x-backend"] == "two"
    dump = (await _admin(proxy, "/config_dump")).json()
    assert dump["version"] == "2"


async def _admin(proxy: Running, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://127.0.0.1:{proxy.admin.port}{path}")
