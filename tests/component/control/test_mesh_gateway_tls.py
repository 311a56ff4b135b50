"""The ingress gateway serves Ingress `tls` hosts over TLS, choosing the certificate by SNI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gossamer.control.server import ControlPlane
from gossamer.proxy import Proxy
from gossamer.proxy.agent import AgentOptions, ControlPlaneAgent
from gossamer.snapshot.protocol import Hello

from ..proxy.backend import Backend
from .test_mesh_push import (
    CORE,
    ISTIO,
    create,
    entry,
    eventually_async,
    free_port,
    reviews_service,
)

NETWORKING = "/apis/networking.k8s.io/v1/namespaces/default/ingresses"


def openssl() -> str:
    """The openssl command; installed with apt-get when missing and root."""
    found = shutil.which("openssl")
    if found is None and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "openssl"], check=True, timeout=600)
        found = shutil.which("openssl")
    assert found is not None, "openssl is needed: run `sudo apt-get install -y openssl`"
    return found


def certificate(secrets: Path, name: str, host: str) -> Path:
    """A self-signed certificate for `host`, where the gateway reads secret `name`."""
    folder = secrets / name
    folder.mkdir(parents=True)
    subprocess.run(
        [
            *(openssl(), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-days", "2", "-subj", f"/CN={host}"),
            *("-addext", f"subjectAltName=DNS:{host}"),
            *("-keyout", str(folder / "tls.key"), "-out", str(folder / "tls.crt")),
        ],
        check=True,
        capture_output=True,
    )
    return folder / "tls.crt"


def ingress() -> dict[str, Any]:
    backend = {"service": {"name": "reviews", "port": {"number": 9080}}}
    path = {"path": "/", "pathType": "Prefix", "backend": backend}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "shop"},
        "spec": {
            "tls": [
                {"hosts": ["a.example"], "secretName": "a-cert"},
                {"hosts": ["*.b.example"], "secretName": "b-cert"},
            ],
            "rules": [
                {"host": "a.example", "http": {"paths": [path]}},
                {"host": "shop.b.example", "http": {"paths": [path]}},
            ],
        },
    }


@contextlib.asynccontextmanager
async def gateway(url: str, token: str, secrets: Path) -> AsyncIterator[tuple[int, int]]:
    proxy = Proxy()
    http, https = free_port(), free_port()
    hello = Hello(
        workload="istio-ingressgateway",
        namespace="istio-system",
        role="gateway",
        gateway_port=http,
        gateway_https_port=https,
        secrets_dir=str(secrets),
    )
    agent = ControlPlaneAgent(proxy, AgentOptions(urls=(url,), token=token, hello=hello))
    task = asyncio.get_running_loop().create_task(agent.run())
    try:
        await asyncio.wait_for(agent.configured.wait(), 10)
        yield http, https
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await proxy.close()


async def fetch(port: int, host: str, cafile: Path) -> tuple[str, int, str]:
    """The certificate's CN the gateway presents for SNI `host`, and the response."""
    context = ssl.create_default_context(cafile=str(cafile))
    async with httpx.AsyncClient(verify=context, timeout=5.0) as client:
        response = await client.get(
            f"https://127.0.0.1:{port}/", headers={"Host": host}, extensions={"sni_hostname": host}
        )
        stream = response.extensions["network_stream"]
        peer = stream.get_extra_info("ssl_object").getpeercert()
    subject = dict(item[0] for item in peer["subject"])
    return subject["commonName"], response.status_code, response.text


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    server = await Backend("shop").start()
    yield server
    await server.stop()


async def test_ingress_tls_hosts_get_their_own_certificate_by_sni(
    plane: ControlPlane, client: httpx.AsyncClient, token: str, backend: Backend, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    a_cert = certificate(secrets, "a-cert", "a.example")
    b_cert = certificate(secrets, "b-cert", "*.b.example")
    await create(client, f"{CORE}/services", reviews_service())
    await create(client, f"{ISTIO}/workloadentries", entry("shop-0", backend.port, "v1"))
    await create(client, NETWORKING, ingress())
    async with gateway(plane.url, token, secrets) as (_, https):

        async def served() -> bool:
            return (await fetch(https, "a.example", a_cert))[1] == 200

        # The gateway's first snapshot may precede the endpoints' recompute by the debounce.
        await eventually_async(served)
        common_name, status, body = await fetch(https, "a.example", a_cert)
        assert (common_name, status) == ("a.example", 200), body
        common_name, status, body = await fetch(https, "shop.b.example", b_cert)
        assert (common_name, status) == ("*.b.example", 200), body
        assert backend.requests[-1].header("x-forwarded-proto") == "https"
