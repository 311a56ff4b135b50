"""Certificates of one minute, renewed at half-life, under steady load for 40 seconds.

The lifetime is the shortest the CA signs; each sidecar renews about every 30 s (half of the
life from issue, although notBefore is back-dated a minute), once while requests flow.
The DestinationRule recycles upstream connections every few requests, so new mTLS handshakes
happen all along, with whichever certificates are current.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gossamer.control.mesh.service import MeshSettings
from gossamer.control.server import ControlPlane, ControlPlaneConfig, Listen

from ..proxy.backend import Backend
from .test_mesh_push import APPS, CORE, ISTIO, create, deployment, eventually_async, sidecar

LOAD_SECONDS = 40.0
WORKERS = 8


@pytest.fixture
async def short_lived(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    config = ControlPlaneConfig(
        state_dir=tmp_path / "state",
        listen=Listen("127.0.0.1", 0),
        graceful_s=1.0,
        mesh=MeshSettings(certificate_lifetime_s=60.0),
        tls=False,  # the proxies' certificates, not the API's, are what this is about
    )
    async with ControlPlane(config) as running:
        yield running


@pytest.mark.timeout(LOAD_SECONDS + 60)
async def test_no_request_fails_across_certificate_rotations(short_lived: ControlPlane) -> None:
    token = short_lived.token_file.read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    backend = Backend("reviews")
    await backend.start()
    recycle = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews"},
        "spec": {
            "host": "reviews",
            "trafficPolicy": {"connectionPool": {"http": {"maxRequestsPerConnection": 5}}},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "reviews"},
        "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080}]},
    }
    async with httpx.AsyncClient(base_url=short_lived.url, headers=headers) as api:
        await create(api, APPS, deployment("productpage", app="productpage"))
        await create(api, APPS, deployment("reviews-v1", app="reviews"))
        await create(api, f"{CORE}/services", service)
        await create(api, f"{ISTIO}/destinationrules", recycle)
    try:
        async with (
            sidecar(short_lived.url, token, "reviews-v1", app_port=backend.port) as reviews,
            sidecar(short_lived.url, token) as caller,
        ):

            async def through_both() -> bool:
                return (await caller.get("/")).status_code == 200

            await eventually_async(through_both)
            assert caller.agent.identity is not None
            first_expiry = caller.agent.identity.not_after
            outcomes: dict[str, int] = {}
            deadline = time.monotonic() + LOAD_SECONDS

            async def worker() -> None:
                async with httpx.AsyncClient(timeout=5.0) as http:
                    url = f"http://127.0.0.1:{caller.outbound}/"
                    while time.monotonic() < deadline:
                        try:
                            response = await http.get(url, headers={"Host": "reviews:9080"})
                            key = str(response.status_code)
                            if response.status_code != 200:
                                key += " " + response.headers.get("x-gossamer-reason", "")
                        except httpx.HTTPError as error:
                            key = type(error).__name__
                        outcomes[key] = outcomes.get(key, 0) + 1
                        await asyncio.sleep(0.02)

            await asyncio.gather(*(worker() for _ in range(WORKERS)))
            assert set(outcomes) == {"200"}, outcomes
            assert outcomes["200"] > 1000
            # Renewed at the half-life of the certificate's life from issue (30 s, give or
            # take 5%): the first and one more each, not one per retry interval.
            for side in (caller, reviews):
                assert 2 <= side.agent.renewals <= 3, side.agent.renewals
            assert caller.agent.identity.not_after > first_expiry
            # Upstream connections were recycled all along: hundreds of fresh handshakes.
            handshakes = reviews.proxy.stats.counters["gossamer_mtls_connections_total"]
            assert handshakes > outcomes["200"] // 10, handshakes
    finally:
        await backend.stop()
