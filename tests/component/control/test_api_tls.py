"""The control-plane API over HTTPS with a certificate from the mesh CA."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gossamer.control.client import ApiClient, UnreachableError
from gossamer.control.server import ControlPlane, ControlPlaneConfig, Listen
from gossamer.proxy import Proxy
from gossamer.proxy.agent import AgentOptions, ControlPlaneAgent
from gossamer.snapshot.protocol import Hello

from .test_mesh_push import APPS, create, deployment


@pytest.fixture
async def tls_plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    config = ControlPlaneConfig(
        state_dir=tmp_path / "state", listen=Listen("127.0.0.1", 0), graceful_s=1.0
    )
    async with ControlPlane(config) as running:
        yield running


async def test_the_api_is_served_over_https_with_the_mesh_ca(tls_plane: ControlPlane) -> None:
    assert tls_plane.url.startswith("https://127.0.0.1:")
    token = tls_plane.token_file.read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    trusted = ssl.create_default_context(cafile=str(tls_plane.ca_file))
    async with httpx.AsyncClient(base_url=tls_plane.url, headers=headers, verify=trusted) as http:
        response = await http.get("/api/v1/namespaces/default/services")
        assert response.status_code == 200
        peer = response.extensions["network_stream"].get_extra_info("ssl_object")
        assert peer.version() in ("TLSv1.2", "TLSv1.3")
    # A client that does not trust the mesh root refuses the server.
    async with httpx.AsyncClient(base_url=tls_plane.url, headers=headers) as http:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get("/api/v1/namespaces/default/services")
    # The key of the API certificate is readable by its owner only.
    key = tls_plane.config.state_dir / "api-tls" / "tls.key"
    assert key.stat().st_mode & 0o777 == 0o600


async def test_the_cli_client_verifies_with_the_ca_file(tls_plane: ControlPlane) -> None:
    token = tls_plane.token_file.read_text().strip()

    def services(ca_file: str | None) -> int:
        # The CLI's synchronous client, in a thread: the plane serves on this test's loop.
        with ApiClient(tls_plane.url, token, ca_file=ca_file) as api:
            served = api.served("v1", "Service")
            assert served is not None
            return len(api.list(served, "default"))

    assert await asyncio.to_thread(services, str(tls_plane.ca_file)) == 0
    with pytest.raises(UnreachableError):
        await asyncio.to_thread(services, None)


async def test_a_sidecar_streams_config_over_wss(tls_plane: ControlPlane) -> None:
    token = tls_plane.token_file.read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    trusted = ssl.create_default_context(cafile=str(tls_plane.ca_file))
    async with httpx.AsyncClient(base_url=tls_plane.url, headers=headers, verify=trusted) as http:
        await create(http, APPS, deployment("productpage", app="productpage"))
    proxy = Proxy()
    hello = Hello(workload="productpage", outbound_port=0, inbound_port=0)
    options = AgentOptions(
        urls=(tls_plane.url,), token=token, hello=hello, ca_file=tls_plane.ca_file
    )
    agent = ControlPlaneAgent(proxy, options)
    task = asyncio.get_running_loop().create_task(agent.run())
    try:
        await asyncio.wait_for(agent.configured.wait(), 10)
        assert agent.identity is not None
        assert agent.identity.spiffe == "spiffe://cluster.local/ns/default/sa/default"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await proxy.close()
