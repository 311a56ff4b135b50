"""Fault injection over real sockets: aborts and delays, in the share of requests asked for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx

from gossamer.snapshot import DirectResponse, Fault, Route, ServiceLabels, Snapshot

from .backend import Backend
from .harness import Running, cluster, read_response, snapshot, to
from .waiting import eventually

Run = Callable[[Snapshot], Awaitable[Running]]


def faulty(backend: Backend, fault: Fault, **route: object) -> Snapshot:
    return snapshot([to("one", fault=fault, **route)], [cluster("one", backend.port)])


async def test_an_abort_answers_for_the_upstream(backend: Backend, run_proxy: Run) -> None:
    proxy = await run_proxy(faulty(backend, Fault(abort_status=418)))
    async with httpx.AsyncClient() as client:
        response = await client.get(proxy.url)
    assert response.status_code == 418
    assert response.headers["x-gossamer-reason"] == "fault injected"
    assert backend.requests == []
    assert 'response_code="418",response_flags="FI"} 1' in proxy.proxy.stats.prometheus()


async def test_an_abort_is_counted_for_the_destination_the_request_was_for(
    backend: Backend, run_proxy: Run
) -> None:
    labels = ServiceLabels(
        service="ratings.default.svc.cluster.local",
        service_name="ratings",
        namespace="default",
        workload="ratings-v1",
        version="v1",
    )
    config = snapshot(
        [to("ratings", fault=Fault(abort_status=500))],
        [cluster("ratings", backend.port, labels=labels)],
    )
    proxy = await run_proxy(config)
    async with httpx.AsyncClient() as client:
        assert (await client.get(proxy.url)).status_code == 500
    [line] = [
        line
        for line in proxy.proxy.stats.prometheus().splitlines()
        if line.startswith("istio_requests_total{")
    ]
    assert 'destination_service="ratings.default.svc.cluster.local"' in line
    assert 'destination_workload="ratings-v1"' in line
    assert 'response_flags="FI"' in line
    assert backend.requests == []


async def test_an_abort_at_zero_percent_never_fires(backend: Backend, run_proxy: Run) -> None:
    proxy = await run_proxy(faulty(backend, Fault(abort_status=503, abort_percent=0)))
    async with httpx.AsyncClient() as client:
        statuses = {(await client.get(proxy.url)).status_code for _ in range(20)}
    assert statuses == {200}


async def test_an_abort_fires_for_its_percentage(backend: Backend, run_proxy: Run) -> None:
    proxy = await run_proxy(faulty(backend, Fault(abort_status=503, abort_percent=50)))
    async with httpx.AsyncClient() as client:
        statuses = [(await client.get(proxy.url)).status_code for _ in range(200)]
    # Binomial(200, 0.5): these bounds are more than eight standard deviations out.
    assert 60 < statuses.count(503) < 140
    assert statuses.count(200) == len(backend.requests)


async def test_a_delay_holds_the_request_then_forwards_it(backend: Backend, run_proxy: Run) -> None:
    proxy = await run_proxy(faulty(backend, Fault(delay=0.2)))
    async with httpx.AsyncClient() as client:
        started = time.monotonic()
        response = await client.get(proxy.url)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.2
    assert 'response_code="200",response_flags="DI"} 1' in proxy.proxy.stats.prometheus()


async def test_a_delay_does_not_count_against_the_route_timeout(
    backend: Backend, run_proxy: Run
) -> None:
    # As in Envoy: the fault filter runs before the router starts the route's timer.
    proxy = await run_proxy(faulty(backend, Fault(delay=0.3), timeout=0.2))
    async with httpx.AsyncClient() as client:
        assert (await client.get(proxy.url)).status_code == 200


async def test_a_delay_at_zero_percent_never_fires(backend: Backend, run_proxy: Run) -> None:
    proxy = await run_proxy(faulty(backend, Fault(delay=5.0, delay_percent=0)))
    async with httpx.AsyncClient(timeout=2.0) as client:
        assert (await client.get(proxy.url)).status_code == 200


async def test_delay_and_abort_together_delay_then_abort(backend: Backend, run_proxy: Run) -> None:
    # Envoy and Istio: delays and aborts are independent; a request picked for both is delayed,
    # then aborted.
    proxy = await run_proxy(faulty(backend, Fault(delay=0.2, abort_status=503)))
    async with httpx.AsyncClient() as client:
        started = time.monotonic()
        response = await client.get(proxy.url)
    assert response.status_code == 503
    assert time.monotonic() - started >= 0.2
    assert backend.requests == []


async def test_a_client_that_leaves_during_a_delay_is_never_forwarded(
    backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(faulty(backend, Fault(delay=0.2)))
    _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    await writer.drain()
    await eventually(lambda: proxy.proxy.active_requests == 1, what="request held")
    writer.close()
    await eventually(lambda: proxy.proxy.active_requests == 0, what="request ended")
    # Past the end of the delay: a request still scheduled would have been forwarded by now.
    await asyncio.sleep(0.3)
    assert backend.requests == []


async def test_local_replies_to_complete_requests_keep_the_connection(
    backend: Backend, run_proxy: Run
) -> None:
    routes = [
        Route(name="fixed", direct_response=DirectResponse(status=200, body="fixed")),
    ]
    proxy = await run_proxy(snapshot(routes, [cluster("one", backend.port)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    for _ in range(3):
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, body = await asyncio.wait_for(read_response(reader), 5.0)
        assert (status, body) == (200, b"fixed")
        assert headers.get("connection") != "close"
    writer.close()
