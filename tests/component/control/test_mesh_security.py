"""Zero trust through a real control plane: CSRs over the stream, mTLS by default, policies.

productpage's sidecar -> mTLS -> reviews' sidecar -> reviews' app, with certificates the
control plane's CA signs for each workload's service account.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
from websockets.asyncio.client import connect

from gossamer.control.server import ControlPlane
from gossamer.proxy.agent import stream_url
from gossamer.security.identity import WorkloadIdentity
from gossamer.snapshot.protocol import (
    SUBPROTOCOL,
    Hello,
    Welcome,
    decode_from_control_plane,
    encode,
)

from ..proxy.backend import Backend
from .test_mesh_push import (
    APPS,
    CORE,
    create,
    deployment,
    eventually_async,
    reviews_service,
    sidecar,
)

SECURITY = "/apis/security.istio.io/v1/namespaces/default"


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    app = Backend("reviews")
    await app.start()
    yield app
    await app.stop()


async def two_workloads(client: httpx.AsyncClient) -> None:
    await create(client, APPS, deployment("productpage", "bookinfo-productpage", app="productpage"))
    await create(client, APPS, deployment("reviews-v1", "bookinfo-reviews", app="reviews"))
    await create(client, f"{CORE}/services", reviews_service())


async def test_sidecars_get_certificates_for_their_service_accounts_and_talk_mtls(
    plane: ControlPlane,
    client: httpx.AsyncClient,
    token: str,
    backend: Backend,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await two_workloads(client)
    async with (
        sidecar(plane.url, token, "reviews-v1", app_port=backend.port) as reviews,
        sidecar(plane.url, token) as caller,
    ):
        assert caller.agent.identity is not None and reviews.agent.identity is not None
        assert caller.agent.identity.spiffe == (
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
        )
        assert (
            reviews.agent.identity.spiffe == "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
        )

        async def through_both() -> bool:
            return (await caller.get("/reviews/1")).status_code == 200

        await eventually_async(through_both)
        # proxy-status (and `describe workload`) show each proxy's certificate.
        listed = (await client.get("/debug/v1/proxies")).json()["items"]
        [reviews_status] = [item for item in listed if item["workload"] == "reviews-v1"]
        assert reviews_status["identity"] == reviews.agent.identity.spiffe
        lifetime = reviews_status["certificateExpiry"] - time.time()
        assert 86000 < lifetime <= 86400, "the default lifetime is 24 h"
        # The server's sidecar learnt the caller from its certificate.
        inbound = [labels for labels in reviews.proxy.stats.series if labels[0] == "destination"]
        assert inbound, "reviews' sidecar recorded no inbound request"
        assert inbound[0][3] == "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
        # Its inbound port refuses plaintext once the namespace is STRICT.
        strict = {
            "apiVersion": "security.istio.io/v1",
            "kind": "PeerAuthentication",
            "metadata": {"name": "default"},
            "spec": {"mtls": {"mode": "STRICT"}},
        }
        await create(client, f"{SECURITY}/peerauthentications", strict)
        port = reviews.proxy.listeners["inbound"].port

        async def refuses_plaintext() -> bool:
            return await plaintext_status(port) is None

        await eventually_async(refuses_plaintext)
        assert (await caller.get("/reviews/1")).status_code == 200
        # Neither the logs, nor the proxies' config dumps, nor the API ever show a private key.
        dumps = [msgspec.json.encode(side.proxy.snapshot) for side in (caller, reviews)]
        everything = (await client.get("/debug/v1/proxies")).text
    assert "PRIVATE KEY" not in caplog.text
    assert all(b"PRIVATE KEY" not in dump for dump in dumps)
    assert "PRIVATE KEY" not in everything


async def test_an_authorization_policy_lets_only_the_named_caller_do_the_named_things(
    plane: ControlPlane, client: httpx.AsyncClient, token: str, backend: Backend
) -> None:
    await two_workloads(client)
    policy = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "reviews-readers"},
        "spec": {
            "selector": {"matchLabels": {"app": "reviews"}},
            "action": "ALLOW",
            "rules": [
                {
                    "from": [
                        {
                            "source": {
                                "principals": ["cluster.local/ns/default/sa/bookinfo-productpage"]
                            }
                        }
                    ],
                    "to": [{"operation": {"methods": ["GET"], "paths": ["/reviews/*"]}}],
                }
            ],
        },
    }
    await create(client, f"{SECURITY}/authorizationpolicies", policy)
    async with (
        sidecar(plane.url, token, "reviews-v1", app_port=backend.port) as reviews,
        sidecar(plane.url, token) as caller,
    ):

        async def allowed() -> bool:
            return (await caller.get("/reviews/1")).status_code == 200

        await eventually_async(allowed)
        before = len(backend.requests)
        denied = await caller.get("/ratings/1")
        assert denied.status_code == 403
        assert denied.headers["x-gossamer-reason"] == "rbac denied"
        # A plaintext caller has no principal: denied too (PERMISSIVE lets it connect).
        port = reviews.proxy.listeners["inbound"].port
        assert await plaintext_status(port, "/reviews/1") == 403
        assert len(backend.requests) == before, "a denied request reached the app"


async def test_a_csr_for_another_workloads_identity_is_refused(
    plane: ControlPlane, client: httpx.AsyncClient, token: str
) -> None:
    await two_workloads(client)
    minted = await client.post(
        "/auth/v1/namespaces/default/workloadtokens", json={"workload": "productpage"}
    )
    productpage_token = minted.json()["token"]
    # productpage's own token, productpage's own stream, but a CSR for reviews' identity.
    thief = WorkloadIdentity.create("spiffe://cluster.local/ns/default/sa/bookinfo-reviews")
    hello = Hello(workload="productpage", csr=thief.csr())
    async with connect(
        stream_url(plane.url, hello),
        additional_headers={"Authorization": f"Bearer {productpage_token}"},
        subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
    ) as websocket:
        await websocket.send(encode(hello))
        welcome = decode_from_control_plane(await asyncio.wait_for(websocket.recv(), 5))
    assert isinstance(welcome, Welcome)
    assert welcome.certificate == ""
    assert "bookinfo-reviews" in welcome.certificate_error
    assert "bookinfo-productpage" in welcome.certificate_error
    assert welcome.identity == "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    # No private key ever travels: the stream carries a CSR one way and a chain the other.
    assert b"PRIVATE KEY" not in encode(hello)
    assert "PRIVATE KEY" not in msgspec.json.encode(welcome).decode()


async def plaintext_status(port: int, path: str = "/") -> int | None:
    """The status of a plaintext GET to a sidecar's inbound port; None when it hangs up."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: reviews:9080\r\n\r\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    fields = line.split()
    return int(fields[1]) if len(fields) > 1 else None
