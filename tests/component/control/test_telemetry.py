"""The built-in telemetry with a real control plane, gateway, sidecar and app: the figures of
`stat`, `edges`, `top`, `tap` and `trace` agree with the proxies' own /stats/prometheus."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from gossamer.cli.app import app
from gossamer.control.server import ControlPlane, ControlPlaneConfig
from gossamer.control.telemetry.defaults import RECEIVER_PATH
from gossamer.control.telemetry.metrics import histogram_quantile
from gossamer.control.telemetry.prometheus import parse_requests
from gossamer.control.telemetry.scraper import ScrapeSettings
from gossamer.control.telemetry.service import TelemetrySettings
from gossamer.listen import Listen
from gossamer.proxy import Proxy
from gossamer.proxy.admin import AdminServer
from gossamer.proxy.agent import AgentOptions, ControlPlaneAgent
from gossamer.snapshot.protocol import Hello, Instance

from ..proxy.backend import Backend
from .conftest import API, SETTINGS
from .test_mesh_push import APPS, CORE, create, deployment, free_port, reviews_service
from .test_mesh_tracing import ROOT, telemetry

LABELS = ("reporter", "destination_service_name", "destination_workload", "response_code")
REQUESTS = 200
FAILED = 20


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    config = ControlPlaneConfig(
        state_dir=tmp_path / "state",
        listen=Listen("127.0.0.1", 0),
        api=API,
        store_settings=SETTINGS,
        graceful_s=1.0,
        tls=False,
        telemetry=TelemetrySettings(scrape=ScrapeSettings(interval_s=0.2)),
    )
    async with ControlPlane(config) as running:
        yield running


@contextlib.asynccontextmanager
async def proxy(url: str, token: str, hello: Hello) -> AsyncIterator[Proxy]:
    """A proxy with its admin endpoint announced, as `gossamer proxy` runs one."""
    running = Proxy()
    admin = AdminServer(running)
    await admin.start("127.0.0.1", 0)
    hello = hello.__class__(**{**_fields(hello), "admin": f"127.0.0.1:{admin.port}"})
    options = AgentOptions(urls=(url,), token=token, hello=hello, backoff_max_s=0.5)
    agent = ControlPlaneAgent(running, options)
    task = asyncio.get_running_loop().create_task(agent.run())
    try:
        await asyncio.wait_for(agent.configured.wait(), 10)
        yield running
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await admin.close()
        await running.close()


def _fields(hello: Hello) -> dict[str, Any]:
    return {name: getattr(hello, name) for name in hello.__struct_fields__}


def gateway_ingress() -> dict[str, Any]:
    backend = {"service": {"name": "reviews", "port": {"number": 9080}}}
    path = {"path": "/", "pathType": "Prefix", "backend": backend}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "shop"},
        "spec": {"rules": [{"host": "a.example", "http": {"paths": [path]}}]},
    }


async def mint(client: httpx.AsyncClient, namespace: str, workload: str) -> str:
    answer = await client.post(
        f"/auth/v1/namespaces/{namespace}/workloadtokens", json={"workload": workload}
    )
    assert answer.status_code == 201, answer.text
    token: str = answer.json()["token"]
    return token


async def eventually(condition: Any, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def cli(*args: str) -> Any:
    """Run the command in a thread (the control plane runs on this loop)."""
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args))
    assert result.exit_code == 0, result.output
    return result


class Mesh:
    """A gateway in front of reviews-v1's sidecar in front of an app, tracing to the plane."""

    def __init__(self, gateway: Proxy, sidecar: Proxy, gateway_port: int, app: Backend) -> None:
        self.gateway = gateway
        self.sidecar = sidecar
        self.gateway_port = gateway_port
        self.app = app

    async def send(self, count: int, failed: int, path: str = "/", **headers: str) -> None:
        async with httpx.AsyncClient(timeout=10.0) as http:
            for index in range(count):
                extra = {"x-status": "500"} if index < failed else {}
                answer = await http.get(
                    f"http://127.0.0.1:{self.gateway_port}{path}",
                    headers={"Host": "a.example", **extra, **headers},
                )
                assert answer.status_code == (500 if index < failed else 200)


@pytest.fixture
async def mesh(plane: ControlPlane, client: httpx.AsyncClient) -> AsyncIterator[Mesh]:
    app = await Backend("reviews").start()
    await create(client, APPS, deployment("reviews-v1", app="reviews", version="v1"))
    await create(client, f"{CORE}/services", reviews_service())
    await create(
        client, "/apis/networking.k8s.io/v1/namespaces/default/ingresses", gateway_ingress()
    )
    provider = {
        "apiVersion": "gossamer.dev/v1alpha1",
        "kind": "TelemetryProvider",
        "metadata": {"name": "zipkin", "namespace": ROOT},
        "spec": {"zipkin": {"url": plane.url + RECEIVER_PATH}, "flushInterval": "50ms"},
    }
    await create(
        client, f"/apis/gossamer.dev/v1alpha1/namespaces/{ROOT}/telemetryproviders", provider
    )
    await create(
        client, f"/apis/telemetry.istio.io/v1/namespaces/{ROOT}/telemetries", telemetry(100)
    )
    # Workload tokens, as `up` hands them out: the spans go with them.
    gateway_token = await mint(client, ROOT, "istio-ingressgateway")
    sidecar_token = await mint(client, "default", "reviews-v1")
    inbound, port = free_port(), free_port()
    sidecar_hello = Hello(
        workload="reviews-v1",
        instance=Instance("127.0.0.1", inbound),
        outbound_port=free_port(),
        inbound_port=inbound,
        app_port=app.port,
    )
    gateway_hello = Hello(
        workload="istio-ingressgateway", namespace=ROOT, role="gateway", gateway_port=port
    )
    try:
        async with (
            proxy(plane.url, sidecar_token, sidecar_hello) as sidecar,
            proxy(plane.url, gateway_token, gateway_hello) as gateway,
        ):
            running = Mesh(gateway, sidecar, port, app)

            async def served() -> bool:
                async with httpx.AsyncClient(timeout=5.0) as http:
                    answer = await http.get(
                        f"http://127.0.0.1:{port}/", headers={"Host": "a.example"}
                    )
                return answer.status_code == 200

            await eventually(served)
            yield running
    finally:
        await app.stop()


def counters(stats: Proxy, reporter: str) -> tuple[int, int, list[int]]:
    """(requests, 5xx, per-bucket durations) of a proxy's own exposition, for one reporter."""
    requests = failures = 0
    buckets = [0] * 20
    for sample in parse_requests(stats.stats.prometheus(), LABELS):
        if sample.key[0] != reporter:
            continue
        requests += sample.requests
        if sample.key[3].startswith("5"):
            failures += sample.requests
        below = 0
        for index, running in enumerate(sample.buckets):
            buckets[index] += running - below
            below = running
    return requests, failures, buckets


def agrees(item: dict[str, Any], requests: int, failures: int, buckets: list[int]) -> None:
    assert (item["requests"], item["failures"]) == (requests, failures)
    assert item["successRate"] == pytest.approx((requests - failures) / requests)
    for name, q in (("latencyP50", 0.5), ("latencyP95", 0.95), ("latencyP99", 0.99)):
        assert item[name] == pytest.approx(histogram_quantile(q, buckets))


async def test_stat_edges_top_and_trace_agree_with_the_proxies_counters(
    plane: ControlPlane, mesh: Mesh, token: str
) -> None:
    await mesh.send(REQUESTS, FAILED)
    server = ["--server", plane.url, "--token", token]
    gateway = counters(mesh.gateway, "source")
    sidecar = counters(mesh.sidecar, "destination")
    assert gateway[0] >= REQUESTS + 1 and sidecar[0] >= REQUESTS + 1  # and the readiness probe

    async def scraped() -> bool:
        answer = json.loads((await cli("stat", "deploy/reviews-v1", "-o", "json", *server)).output)
        return bool(answer["items"]) and answer["items"][0]["requests"] == sidecar[0]

    await eventually(scraped)
    [workload] = json.loads((await cli("stat", "deploy", "-o", "json", *server)).output)["items"]
    assert (workload["name"], workload["meshed"]) == ("reviews-v1", "1/1")
    agrees(workload, *sidecar)
    assert workload["rps"] == pytest.approx(sidecar[0] / 60.0, rel=0.01) or workload["rps"] > 0

    async def callers_scraped() -> bool:
        answer = json.loads((await cli("stat", "svc/reviews", "-o", "json", *server)).output)
        return bool(answer["items"]) and answer["items"][0]["requests"] == gateway[0]

    await eventually(callers_scraped)
    [service] = json.loads((await cli("stat", "reviews", "-o", "json", *server)).output)["items"]
    agrees(service, *gateway)
    assert service["failures"] == FAILED

    [edge] = json.loads((await cli("edges", "-A", "-o", "json", *server)).output)["items"]
    assert (edge["source"], edge["destination"]) == (
        "istio-ingressgateway.istio-system",
        "reviews.default",
    )
    agrees(edge, *gateway)

    table = (await cli("stat", *server)).output
    assert "reviews" in table and "90.0" in table.replace("90.05", "90.0").replace("90.10", "90.0")
    frame = (await cli("top", "--once", *server)).output
    assert "istio-ingressgateway.istio-system" in frame and "reviews.default" in frame
    assert str(gateway[1]) in frame

    # One request's trace: the gateway's CLIENT span and the sidecar's SERVER span, linked.
    last = mesh.app.requests[-1].header("x-b3-traceid")
    assert last is not None

    async def traced() -> bool:
        result = await asyncio.to_thread(
            CliRunner().invoke, app, ["trace", last, "-o", "json", *server]
        )
        return result.exit_code == 0 and len(json.loads(result.output)["spans"]) == 2

    await eventually(traced)
    spans = json.loads((await cli("trace", last, "-o", "json", *server)).output)["spans"]
    by_kind = {span["kind"]: span for span in spans}
    assert by_kind["CLIENT"]["service"] == "istio-ingressgateway.istio-system"
    assert by_kind["SERVER"]["service"] == "reviews.default"
    assert by_kind["SERVER"]["parentId"] == by_kind["CLIENT"]["id"]
    assert {span["traceId"] for span in spans} == {last.rjust(32, "0")}
    waterfall = (await cli("trace", last, *server)).output
    assert "istio-ingressgateway.istio-system" in waterfall and "reviews.default" in waterfall
    failed = json.loads(
        (await cli("trace", "--failed", "--limit", "100", "-o", "json", *server)).output
    )["items"]
    assert len(failed) == FAILED and all(item["status"] == "500" for item in failed)


async def test_a_tap_shows_live_requests_and_ends_by_itself(
    plane: ControlPlane, mesh: Mesh, token: str, client: httpx.AsyncClient
) -> None:
    server = ["--server", plane.url, "--token", token]
    args = ["tap", "reviews", "--path", "/tapped", "--reporter", "destination", "-c", "5"]
    tapping = asyncio.ensure_future(cli(*args, "-o", "json", *server))

    async def started() -> bool:
        return mesh.sidecar.stats.tap is not None and mesh.gateway.stats.tap is not None

    await eventually(started)
    await mesh.send(3, 0, path="/other")
    await mesh.send(8, 1, path="/tapped", authorization="Bearer secret")
    lines = [json.loads(line) for line in (await tapping).output.splitlines()]
    *events, end = lines
    assert end == {"end": True, "events": 5, "dropped": 0}
    assert [event["path"] for event in events] == ["/tapped"] * 5
    assert [event["status"] for event in events] == [500, 200, 200, 200, 200]
    assert {event["reporter"] for event in events} == {"destination"}
    headers = dict(events[0]["headers"])
    assert headers["authorization"] == "REDACTED"

    async def stopped() -> bool:
        return mesh.sidecar.stats.tap is None and mesh.gateway.stats.tap is None

    await eventually(stopped)
    # Taps show paths and headers: a workload's token may not start one.
    workload = await mint(client, "default", "reviews-v1")
    refused = await asyncio.to_thread(
        CliRunner().invoke, app, ["tap", "reviews", "--server", plane.url, "--token", workload]
    )
    assert refused.exit_code == 1 and "Forbidden" in refused.output


def zipkin_span(trace: str = "a" * 32, service: str = "reviews.default") -> dict[str, Any]:
    return {
        "traceId": trace,
        "id": "b" * 16,
        "name": "x",
        "timestamp": 1_700_000_000_000_000,
        "duration": 5,
        "localEndpoint": {"serviceName": service},
    }


async def test_bad_and_oversized_spans_are_refused_and_counted(
    plane: ControlPlane, client: httpx.AsyncClient
) -> None:
    url = RECEIVER_PATH
    assert (await client.post(url, content=b"{not json")).status_code == 400
    assert (await client.post(url, json=[zipkin_span(trace="XYZ")])).status_code == 400
    assert (await client.post(url, json=[{**zipkin_span(), "timestamp": 0}])).status_code == 400
    big = [zipkin_span()] * 30_000
    assert (await client.post(url, json=big)).status_code == 413
    assert (await client.post(url, json=[zipkin_span()])).status_code == 202
    workload = await mint(client, "default", "reviews-v1")
    other = [zipkin_span(service="payments.billing")]
    answer = await client.post(url, json=other, headers={"Authorization": f"Bearer {workload}"})
    assert answer.status_code == 403
    own = await client.post(
        url, json=[zipkin_span()], headers={"Authorization": f"Bearer {workload}"}
    )
    assert own.status_code == 202
    status = (await client.get("/telemetry/v1/status")).json()["spans"]
    assert status["refused"] == {"malformed": 1, "invalid": 2, "too_large": 1, "forbidden": 1}
    assert status["accepted"] == 2
    # The control plane still serves.
    assert (await client.get("/telemetry/v1/traces")).status_code == 200
