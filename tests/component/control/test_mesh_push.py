"""Push: a real proxy on the control plane's stream routes as the stored resources say, live."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gossamer.control.mesh.service import MeshSettings
from gossamer.control.server import ControlPlane, ControlPlaneConfig, Listen
from gossamer.proxy import Proxy
from gossamer.proxy.agent import AgentOptions, ControlPlaneAgent, stream_url
from gossamer.snapshot.protocol import Hello, Instance

from ..proxy.backend import Backend
from ..proxy.waiting import eventually

ISTIO = "/apis/networking.istio.io/v1/namespaces/default"
APPS = "/apis/apps/v1/namespaces/default/deployments"
CORE = "/api/v1/namespaces/default"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def deployment(name: str, account: str | None = None, **labels: str) -> dict[str, Any]:
    """A Deployment of one container; with `account`, its pods' serviceAccountName."""
    pod: dict[str, Any] = {"containers": [{"name": "app", "command": ["python", "-m", name]}]}
    if account is not None:
        pod["serviceAccountName"] = account
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def reviews_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "reviews"},
        "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080}]},
    }


def entry(name: str, port: int, version: str) -> dict[str, Any]:
    """A static instance (as for a VM): the backend itself, without a sidecar."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {"name": name},
        "spec": {
            "address": "127.0.0.1",
            "ports": {"http": port},
            "labels": {"app": "reviews", "version": version},
        },
    }


def subsets() -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews"},
        "spec": {
            "host": "reviews",
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"}},
            ],
        },
    }


def only(subset: str, regex: str | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"route": [{"destination": {"host": "reviews", "subset": subset}}]}
    if regex is not None:
        rule["match"] = [{"uri": {"regex": regex}}]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews"},
        "spec": {"hosts": ["reviews"], "http": [rule]},
    }


@dataclass
class Sidecar:
    proxy: Proxy
    agent: ControlPlaneAgent
    outbound: int

    async def get(self, path: str = "/") -> httpx.Response:
        async with httpx.AsyncClient(timeout=5.0) as http:
            return await http.get(
                f"http://127.0.0.1:{self.outbound}{path}", headers={"Host": "reviews:9080"}
            )

    async def served_by(self) -> str:
        response = await self.get()
        return str(response.json()["backend"]) if response.status_code == 200 else response.text


@contextlib.asynccontextmanager
async def sidecar(
    url: str, token: str, workload: str = "productpage", app_port: int = 0
) -> AsyncIterator[Sidecar]:
    proxy = Proxy()
    outbound, inbound = free_port(), free_port()
    hello = Hello(
        workload=workload,
        instance=Instance("127.0.0.1", inbound),
        outbound_port=outbound,
        inbound_port=inbound,
        app_port=app_port,
    )
    agent = ControlPlaneAgent(
        proxy, AgentOptions(urls=(url,), token=token, hello=hello, backoff_max_s=0.5)
    )
    task = asyncio.get_running_loop().create_task(agent.run())
    try:
        await asyncio.wait_for(agent.configured.wait(), 10)
        yield Sidecar(proxy, agent, outbound)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await proxy.close()


@pytest.fixture
async def backends() -> AsyncIterator[tuple[Backend, Backend]]:
    v1, v2 = Backend("v1"), Backend("v2")
    await v1.start()
    await v2.start()
    yield v1, v2
    await v1.stop()
    await v2.stop()


async def create(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == 201, response.text


async def mesh(client: httpx.AsyncClient, v1: Backend, v2: Backend) -> None:
    await create(client, APPS, deployment("productpage", app="productpage"))
    await create(client, f"{CORE}/services", reviews_service())
    await create(client, f"{ISTIO}/workloadentries", entry("reviews-v1", v1.port, "v1"))
    await create(client, f"{ISTIO}/workloadentries", entry("reviews-v2", v2.port, "v2"))
    await create(client, f"{ISTIO}/destinationrules", subsets())


async def test_a_virtual_service_applied_later_reroutes_a_running_sidecar(
    plane: ControlPlane, client: httpx.AsyncClient, token: str, backends: tuple[Backend, Backend]
) -> None:
    v1, v2 = backends
    await mesh(client, v1, v2)
    async with sidecar(plane.url, token) as proxy:

        async def both() -> bool:
            return {await proxy.served_by() for _ in range(8)} == {"v1", "v2"}

        await eventually_async(both)  # no VirtualService yet: both instances of the Service
        await create(client, f"{ISTIO}/virtualservices", only("v2"))

        async def all_v2() -> bool:
            return {await proxy.served_by() for _ in range(4)} == {"v2"}

        await eventually_async(all_v2)

        # The proxy serves the new routes before its ACK has reached the control plane.
        async def synced() -> bool:
            response = await client.get("/debug/v1/proxies")
            [status] = [p for p in response.json()["items"] if p["workload"] == "productpage"]
            return bool(status["state"] == "SYNCED")

        await eventually_async(synced)
        response = await client.get("/debug/v1/proxies")
        [status] = [p for p in response.json()["items"] if p["workload"] == "productpage"]
        assert status["acked"] == proxy.proxy.snapshot.version  # type: ignore[union-attr]


async def test_a_rejected_update_is_nacked_and_the_proxy_keeps_its_last_good_routes(
    plane: ControlPlane, client: httpx.AsyncClient, token: str, backends: tuple[Backend, Backend]
) -> None:
    v1, v2 = backends
    await mesh(client, v1, v2)
    await create(client, f"{ISTIO}/virtualservices", only("v1"))
    async with sidecar(plane.url, token) as proxy:

        async def on_v1() -> bool:
            return {await proxy.served_by() for _ in range(4)} == {"v1"}

        await eventually_async(on_v1)
        good = proxy.proxy.snapshot.version  # type: ignore[union-attr]
        # `\pL` is valid RE2 (Istio's regex syntax) but not a Python regex: the proxy refuses it.
        changed = only("v2", regex=r"/\pL+")
        current = await client.get(f"{ISTIO}/virtualservices/reviews")
        changed["metadata"]["resourceVersion"] = current.json()["metadata"]["resourceVersion"]
        response = await client.put(f"{ISTIO}/virtualservices/reviews", json=changed)
        assert response.status_code == 200, response.text

        async def nacked() -> bool:
            items = (await client.get("/debug/v1/proxies")).json()["items"]
            return any(p["state"] == "NACKED" for p in items)

        await eventually_async(nacked)
        items = (await client.get("/debug/v1/proxies")).json()["items"]
        [status] = [p for p in items if p["workload"] == "productpage"]
        assert "regex" in status["error"] or "escape" in status["error"], status
        assert proxy.proxy.snapshot.version == good  # type: ignore[union-attr]
        assert {await proxy.served_by() for _ in range(4)} == {"v1"}
        # A fixed rule is accepted again, and the proxy is SYNCED.
        fixed = only("v2")
        current = await client.get(f"{ISTIO}/virtualservices/reviews")
        fixed["metadata"]["resourceVersion"] = current.json()["metadata"]["resourceVersion"]
        assert (await client.put(f"{ISTIO}/virtualservices/reviews", json=fixed)).is_success

        async def on_v2() -> bool:
            return {await proxy.served_by() for _ in range(4)} == {"v2"}

        await eventually_async(on_v2)


async def test_a_workload_token_opens_only_its_own_workloads_stream(
    plane: ControlPlane, client: httpx.AsyncClient, backends: tuple[Backend, Backend]
) -> None:
    v1, v2 = backends
    await mesh(client, v1, v2)
    minted = await client.post(
        "/auth/v1/namespaces/default/workloadtokens", json={"workload": "productpage"}
    )
    assert minted.status_code == 201, minted.text
    workload_token = minted.json()["token"]
    async with sidecar(plane.url, workload_token) as proxy:

        async def served() -> bool:
            return (await proxy.get()).status_code == 200

        await eventually_async(served)
    # The same token for another workload's stream: 403 before any upgrade; no token: 401.
    other = Hello(workload="reviews-v1")
    for headers, status in (({"Authorization": f"Bearer {workload_token}"}, 403), ({}, 401)):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(stream_url(plane.url, other), additional_headers=headers):
                pass
        assert refused.value.response.status_code == status
    # It cannot use the resource API either.
    async with httpx.AsyncClient(base_url=plane.url) as http:
        denied = await http.get(
            f"{CORE}/services", headers={"Authorization": f"Bearer {workload_token}"}
        )
    assert denied.status_code == 403


async def test_a_sidecar_registers_its_instance_and_leaves_when_its_stream_ends(
    plane: ControlPlane, client: httpx.AsyncClient, token: str, backends: tuple[Backend, Backend]
) -> None:
    v1, v2 = backends
    await mesh(client, v1, v2)
    async with sidecar(plane.url, token) as proxy:
        assert proxy.agent.connected_to == plane.url

        async def registered() -> bool:
            items = (await client.get(f"{ISTIO}/workloadentries")).json()["items"]
            mine = [i for i in items if i["metadata"]["name"].startswith("productpage-")]
            return bool(mine) and mine[0]["status"]["conditions"][0]["status"] == "True"

        await eventually_async(registered)
        items = (await client.get(f"{ISTIO}/workloadentries")).json()["items"]
        [mine] = [i for i in items if i["metadata"]["name"].startswith("productpage-")]
        assert mine["spec"]["labels"] == {"app": "productpage"}
    assert plane.mesh is not None

    async def marked_gone() -> bool:
        body = (await client.get(f"{ISTIO}/workloadentries/{mine['metadata']['name']}")).json()
        return body["status"]["conditions"][0]["status"] == "False"

    await eventually_async(marked_gone)


async def test_instances_registered_by_sidecars_are_the_endpoints_other_sidecars_call(
    plane: ControlPlane, client: httpx.AsyncClient, token: str, backends: tuple[Backend, Backend]
) -> None:
    """productpage's sidecar -> reviews' sidecar (registered, inbound) -> reviews' app."""
    app, _ = backends
    await create(client, APPS, deployment("productpage", app="productpage"))
    await create(client, APPS, deployment("reviews-v1", app="reviews", version="v1"))
    await create(client, f"{CORE}/services", reviews_service())
    async with (
        sidecar(plane.url, token, "reviews-v1", app_port=app.port) as reviews,
        sidecar(plane.url, token) as caller,
    ):

        async def through_both() -> bool:
            return await caller.served_by() == "v1"

        await eventually_async(through_both)
        # Both sidecars report the request: as a client (outbound) and as a server (inbound).
        reporters = {
            labels[0] for sidecar in (caller, reviews) for labels in sidecar.proxy.stats.series
        }
        assert reporters == {"source", "destination"}, reporters


async def eventually_async(condition: Any, timeout: float = 15.0) -> None:
    """Poll an async condition until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout}s: {condition.__name__}")
        await asyncio.sleep(0.02)


__all__ = ["eventually"]


async def test_a_restarted_control_plane_sends_its_first_proxy_the_stored_endpoints(
    tmp_path: Path, backends: tuple[Backend, Backend]
) -> None:
    def config(debounce_s: float) -> ControlPlaneConfig:
        return ControlPlaneConfig(
            state_dir=tmp_path / "state",
            listen=Listen("127.0.0.1", 0),
            mesh=MeshSettings(debounce_s=debounce_s, max_delay_s=debounce_s),
            graceful_s=1.0,
            tls=False,
        )

    async with ControlPlane(config(0.1)) as first:
        token = first.token_file.read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=first.url, headers=headers) as client:
            await mesh(client, *backends)
    # Back with a debounce far longer than the test: a proxy that connects at once must get
    # the endpoints the store holds, not those of an index still waiting for its recompute.
    async with ControlPlane(config(60.0)) as restarted, sidecar(restarted.url, token) as proxy:
        assert await proxy.served_by() in {"v1", "v2"}
