"""Prometheus HTTP service discovery: proxies' admin endpoints listed as they come and go, to the
admin token and to the read-only discovery token, and nothing else to that token."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from gossamer.control.auth import PROMETHEUS_TOKEN_FILE
from gossamer.control.server import ControlPlane
from gossamer.proxy.agent import stream_url
from gossamer.snapshot.protocol import SUBPROTOCOL, Hello, Instance, encode

from .test_mesh_push import APPS, CORE, deployment

SD = "/discovery/v1/prometheus"
META = "__meta_gossamer_"


@contextlib.asynccontextmanager
async def proxy_stream(plane: ControlPlane, token: str, hello: Hello) -> AsyncIterator[None]:
    """A proxy's config stream, held open after its hello (its updates are left unread)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(
        stream_url(plane.url, hello), additional_headers=headers, subprotocols=[SUBPROTOCOL]
    ) as websocket:
        await websocket.send(encode(hello))
        await _welcomed(websocket)
        yield


async def _welcomed(websocket: ClientConnection) -> None:
    message = await asyncio.wait_for(websocket.recv(), 10)
    assert b"welcome" in (message if isinstance(message, bytes) else message.encode())


async def targets_until(
    http: httpx.AsyncClient, count: int, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """The discovery answer once it lists `count` targets (polled until a deadline)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        answer = await http.get(SD)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/json"
        groups: list[dict[str, Any]] = answer.json()
        if len(groups) == count:
            return groups
        assert asyncio.get_running_loop().time() < deadline, groups
        await asyncio.sleep(0.02)


async def test_every_proxy_with_an_admin_endpoint_is_a_target_while_its_stream_lasts(
    plane: ControlPlane, client: httpx.AsyncClient, token: str
) -> None:
    created = await client.post(APPS, json=deployment("reviews-v1", app="reviews", version="v1"))
    assert created.status_code == 201, created.text
    sidecar = Hello(
        workload="reviews-v1",
        instance=Instance("127.0.0.1", 15006),
        admin="127.0.0.1:41001",
        name="reviews-v1-17",
    )
    gateway = Hello(
        workload="istio-ingressgateway",
        namespace="istio-system",
        role="gateway",
        admin="127.0.0.1:41002",
    )
    unannounced = Hello(workload="old-proxy")  # a proxy from before admin was announced
    assert await targets_until(client, 0) == []
    async with (
        proxy_stream(plane, token, sidecar),
        proxy_stream(plane, token, gateway),
        proxy_stream(plane, token, unannounced),
    ):
        first, second = await targets_until(client, 2)
        assert first == {
            "targets": ["127.0.0.1:41001"],
            "labels": {
                META + "namespace": "default",
                META + "workload": "reviews-v1",
                META + "app": "reviews",
                META + "version": "v1",
                META + "kind": "sidecar",
                META + "node_id": "sidecar~127.0.0.1~reviews-v1.default~default.svc.cluster.local",
                META + "proxy": "reviews-v1-17",
                META + "control_plane": first["labels"][META + "control_plane"],
                META + "label_app": "reviews",
                META + "label_version": "v1",
            },
        }
        assert second["targets"] == ["127.0.0.1:41002"]
        labels = second["labels"]
        assert labels[META + "kind"] == "gateway"
        assert labels[META + "app"] == "istio-ingressgateway"
        assert labels[META + "namespace"] == "istio-system"
        assert labels[META + "node_id"].startswith("router~127.0.0.1~istio-ingressgateway.")
        assert labels[META + "label_istio"] == "ingressgateway"
    # Gone with their streams.
    assert await targets_until(client, 0) == []


async def test_the_discovery_token_reads_the_targets_and_nothing_else(
    plane: ControlPlane, anonymous: httpx.AsyncClient
) -> None:
    reader = (plane.config.state_dir / PROMETHEUS_TOKEN_FILE).read_text().strip()
    assert (plane.config.state_dir / PROMETHEUS_TOKEN_FILE).stat().st_mode & 0o077 == 0
    headers = {"Authorization": f"Bearer {reader}"}
    listed = await anonymous.get(SD, headers=headers)
    assert listed.status_code == 200, listed.text
    assert listed.json() == []
    for path in (f"{CORE}/services", "/debug/v1/proxies"):
        refused = await anonymous.get(path, headers=headers)
        assert refused.status_code == 403, (path, refused.text)
    posted = await anonymous.post(
        "/auth/v1/namespaces/default/workloadtokens", json={"workload": "x"}, headers=headers
    )
    assert posted.status_code == 403
    assert (await anonymous.get(SD)).status_code == 401
    assert (await anonymous.get(SD, headers={"Authorization": "Bearer nope"})).status_code == 403
