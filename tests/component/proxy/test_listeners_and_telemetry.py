"""Listeners come and go with snapshots; redirects, access logs and metrics say what happened."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx

from gossamer.proxy import Proxy
from gossamer.snapshot import (
    Listener,
    ListenerLimits,
    Node,
    Redirect,
    Route,
    RouteMatch,
    RouteTable,
    ServiceLabels,
    Snapshot,
    StringMatch,
    Telemetry,
    VirtualHost,
)

from .backend import Backend
from .harness import Running, cluster, snapshot, to

Run = Callable[[Snapshot], Awaitable[Running]]


async def test_redirects_answer_with_a_location(backend: Backend, run_proxy: Run) -> None:
    route = Route(
        name="moved",
        match=RouteMatch(path=StringMatch(kind="prefix", value="/old")),
        redirect=Redirect(status=308, path="/new", authority="example.org", scheme="https"),
    )
    proxy = await run_proxy(snapshot([route, to("one")], [cluster("one", backend.port)]))
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{proxy.url}/old/x")
    assert response.status_code == 308
    assert response.headers["location"] == "https://example.org/new"
    assert backend.requests == []


async def test_max_connections_refuses_the_one_too_many(backend: Backend, run_proxy: Run) -> None:
    limits = ListenerLimits(max_connections=2)
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)], limits=limits))
    held = [await asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(2)]
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    refused = await asyncio.wait_for(reader.read(), 5.0)
    assert refused.startswith(b"HTTP/1.1 503 ")
    assert b"too many connections" in refused
    for _, held_writer in held:
        held_writer.close()
    writer.close()


async def test_a_listener_removed_by_a_snapshot_drains_and_a_new_one_serves(
    backend: Backend, run_proxy: Run
) -> None:
    first = snapshot([to("one")], [cluster("one", backend.port)], version="1")
    proxy = await run_proxy(first)
    old_port = proxy.port
    async with httpx.AsyncClient() as client:
        in_flight = asyncio.create_task(
            client.get(f"http://127.0.0.1:{old_port}/", headers={"x-delay": "0.3"})
        )
        await asyncio.sleep(0.1)
        renamed = Snapshot(
            version="2",
            listeners=(
                Listener(
                    name="other",
                    address="127.0.0.1",
                    port=0,
                    role="outbound",
                    route_table="outbound",
                ),
            ),
            route_tables=first.route_tables,
            clusters=first.clusters,
        )
        await proxy.proxy.apply(renamed)
        finished = await in_flight
        new_port = proxy.proxy.port("other")
        fresh = await client.get(f"http://127.0.0.1:{new_port}/")
    assert finished.status_code == 200
    assert fresh.status_code == 200
    assert finished.headers["connection"] == "close"
    refused = False
    try:
        await asyncio.open_connection("127.0.0.1", old_port)
    except OSError:
        refused = True
    assert refused


async def test_the_access_log_writes_one_json_line_per_request(
    backend: Backend, run_proxy: Run
) -> None:
    config = snapshot([to("one")], [cluster("one", backend.port)])
    logged = Snapshot(
        version="log",
        listeners=config.listeners,
        route_tables=config.route_tables,
        clusters=config.clusters,
        telemetry=Telemetry(access_log=True),
    )
    proxy = await run_proxy(logged)
    sink = io.StringIO()
    for handle in proxy.proxy.listeners.values():
        handle.runtime.log = sink
    async with httpx.AsyncClient() as client:
        await client.get(f"{proxy.url}/logged?q=1", headers={"x-request-id": "abc-123"})
        await client.get(f"{proxy.url}/nowhere", headers={"host": "elsewhere"})
    first, second = (json.loads(line) for line in sink.getvalue().splitlines())
    assert first["path"] == "/logged"
    assert first["response_code"] == 200
    assert first["response_flags"] == "-"
    assert first["x_request_id"] == "abc-123"
    assert first["upstream_cluster"] == "one"
    assert first["upstream_host"] == f"127.0.0.1:{backend.port}"
    assert first["snapshot_version"] == "log"
    assert second["response_code"] == 200


async def test_inbound_and_outbound_metrics_use_istio_labels(backend: Backend) -> None:
    labels = ServiceLabels(
        service="reviews.default.svc.cluster.local",
        service_name="reviews",
        namespace="default",
        workload="reviews-v1",
        version="v1",
    )
    config = Snapshot(
        version="m",
        node=Node(
            workload="productpage-v1",
            namespace="default",
            service_account="bookinfo-pp",
            service="productpage",
            version="v1",
        ),
        listeners=(
            Listener(
                name="outbound", address="127.0.0.1", port=0, role="outbound", route_table="rt"
            ),
            Listener(name="inbound", address="127.0.0.1", port=0, role="inbound", route_table="rt"),
        ),
        route_tables=(
            RouteTable(
                name="rt",
                virtual_hosts=(VirtualHost(name="all", domains=("*",), routes=(to("reviews"),)),),
            ),
        ),
        clusters=(cluster("reviews", backend.port, labels=labels),),
    )
    proxy = Proxy()
    await proxy.apply(config)
    try:
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{proxy.port('outbound')}/")
            await client.get(
                f"http://127.0.0.1:{proxy.port('inbound')}/", headers={"x-status": "503"}
            )
        text = proxy.stats.prometheus()
    finally:
        await proxy.close()
    outbound = next(
        line
        for line in text.splitlines()
        if line.startswith('istio_requests_total{reporter="source"')
    )
    assert 'source_workload="productpage-v1"' in outbound
    assert 'source_principal="spiffe://cluster.local/ns/default/sa/bookinfo-pp"' in outbound
    assert 'destination_service="reviews.default.svc.cluster.local"' in outbound
    assert 'destination_workload="reviews-v1"' in outbound
    assert outbound.endswith('response_code="200",response_flags="-"} 1')
    inbound = next(
        line
        for line in text.splitlines()
        if line.startswith('istio_requests_total{reporter="destination"')
    )
    assert 'destination_workload="productpage-v1"' in inbound
    assert 'response_code="503"' in inbound
    assert "istio_request_duration_milliseconds_bucket{" in text


async def test_request_duration_counts_from_the_first_byte(
    backend: Backend, run_proxy: Run
) -> None:
    # As Envoy's: a client slow to send its headers shows in istio_request_duration_milliseconds.
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /slow HTTP/1.1\r\n")
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.write(b"Host: one\r\nConnection: close\r\n\r\n")
    response = await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    assert response.startswith(b"HTTP/1.1 200 ")
    text = proxy.proxy.stats.prometheus()
    total = next(
        line
        for line in text.splitlines()
        if line.startswith("istio_request_duration_milliseconds_sum{")
    )
    assert float(total.rsplit(" ", 1)[1]) >= 300.0


async def test_a_large_body_is_counted_whole_in_the_metrics_and_the_access_log(
    backend: Backend, run_proxy: Run
) -> None:
    # Past the replay buffer (64 KiB) the body streams on; its size still counts every byte.
    config = snapshot([to("one")], [cluster("one", backend.port)])
    proxy = await run_proxy(Snapshot(
        version="big", listeners=config.listeners, route_tables=config.route_tables,
        clusters=config.clusters, telemetry=Telemetry(access_log=True),
    ))  # fmt: skip
    sink = io.StringIO()
    for handle in proxy.proxy.listeners.values():
        handle.runtime.log = sink
    async with httpx.AsyncClient() as client:
        assert (await client.post(proxy.url, content=b"z" * 200_000)).status_code == 200

        async def chunked() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield b"c" * 50_000

        assert (await client.post(proxy.url, content=chunked())).status_code == 200
    sizes = [json.loads(line)["bytes_received"] for line in sink.getvalue().splitlines()]
    assert sizes == [200_000, 150_000]
    text = proxy.proxy.stats.prometheus()
    [total] = [line for line in text.splitlines() if line.startswith("istio_request_bytes_sum{")]
    assert total.endswith(" 350000"), total
