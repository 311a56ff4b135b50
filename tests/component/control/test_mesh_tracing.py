"""Tracing turned on with manifests: a Telemetry and a TelemetryProvider in istio-system make the
gateway and the sidecars the control plane runs export spans of one trace."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from gossamer.control.server import ControlPlane
from gossamer.proxy import Proxy
from gossamer.proxy.agent import AgentOptions, ControlPlaneAgent
from gossamer.snapshot.protocol import Hello

from ..proxy.backend import Backend
from ..proxy.span_receiver import SpanReceiver
from .test_mesh_gateway_tls import ingress
from .test_mesh_push import (
    APPS,
    CORE,
    create,
    deployment,
    eventually_async,
    free_port,
    reviews_service,
    sidecar,
)

ROOT = "istio-system"


def telemetry(sampling: float) -> dict[str, Any]:
    return {
        "apiVersion": "telemetry.istio.io/v1",
        "kind": "Telemetry",
        "metadata": {"name": "mesh-default", "namespace": ROOT},
        "spec": {
            "tracing": [{"providers": [{"name": "zipkin"}], "randomSamplingPercentage": sampling}]
        },
    }


def zipkin(url: str) -> dict[str, Any]:
    return {
        "apiVersion": "gossamer.dev/v1alpha1",
        "kind": "TelemetryProvider",
        "metadata": {"name": "zipkin", "namespace": ROOT},
        "spec": {"zipkin": {"url": url}, "flushInterval": "50ms"},
    }


@contextlib.asynccontextmanager
async def gateway(url: str, token: str) -> AsyncIterator[int]:
    proxy = Proxy()
    port = free_port()
    hello = Hello(
        workload="istio-ingressgateway", namespace=ROOT, role="gateway", gateway_port=port
    )
    agent = ControlPlaneAgent(proxy, AgentOptions(urls=(url,), token=token, hello=hello))
    task = asyncio.get_running_loop().create_task(agent.run())
    try:
        await asyncio.wait_for(agent.configured.wait(), 10)
        yield port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await proxy.close()


async def test_gateway_and_sidecar_spans_of_one_request_share_a_trace(
    plane: ControlPlane, client: httpx.AsyncClient, token: str, tmp_path: Path
) -> None:
    app, receiver = Backend("reviews"), SpanReceiver("zipkin")
    await app.start()
    await receiver.start()
    try:
        await create(client, APPS, deployment("reviews-v1", app="reviews", version="v1"))
        await create(client, f"{CORE}/services", reviews_service())
        await create(client, "/apis/networking.k8s.io/v1/namespaces/default/ingresses", ingress())
        await create(
            client, f"/apis/gossamer.dev/v1alpha1/namespaces/{ROOT}/telemetryproviders",
            zipkin(receiver.zipkin_url),
        )  # fmt: skip
        await create(
            client, f"/apis/telemetry.istio.io/v1/namespaces/{ROOT}/telemetries", telemetry(100)
        )
        async with (
            sidecar(plane.url, token, "reviews-v1", app_port=app.port),
            gateway(plane.url, token) as port,
        ):

            async def served() -> bool:
                async with httpx.AsyncClient(timeout=5.0) as http:
                    answer = await http.get(
                        f"http://127.0.0.1:{port}/", headers={"Host": "a.example"}
                    )
                return answer.status_code == 200

            await eventually_async(served)

            async def both_reported() -> bool:
                kinds = {(span.kind, span.service) for span in receiver.spans}
                return {
                    ("CLIENT", "istio-ingressgateway.istio-system"),
                    ("SERVER", "reviews.default"),
                } <= kinds

            await eventually_async(both_reported)
            assert not receiver.problems, receiver.problems
            last = app.requests[-1].header("x-b3-traceid")
            trace = [span for span in receiver.spans if span.trace == last]
            [edge] = [span for span in trace if span.kind == "CLIENT"]
            [inbound] = [span for span in trace if span.kind == "SERVER"]
            assert edge.parent is None and inbound.parent == edge.span
            assert edge.tags["node_id"].startswith("router~")
            assert inbound.tags["node_id"].startswith("sidecar~")
            assert app.requests[-1].header("x-b3-spanid") == inbound.span
    finally:
        await app.stop()
        await receiver.stop()
