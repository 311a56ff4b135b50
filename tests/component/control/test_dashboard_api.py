"""The dashboard's routes on a real control plane: the page without a token (and nothing else
without one), one-time login codes that become read-only sessions, whoami, kinds, history."""

from __future__ import annotations

import httpx

from gossamer.control.api.dashboard import FILES
from gossamer.control.server import ControlPlane


async def test_the_page_is_served_without_a_token_with_a_strict_policy(
    anonymous: httpx.AsyncClient,
) -> None:
    redirected = await anonymous.get("/dashboard")
    assert redirected.status_code == 308
    assert redirected.headers["location"] == "/dashboard/"
    page = await anonymous.get("/dashboard/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert 'id="login-form"' in page.text
    for name in FILES:
        served = await anonymous.get(f"/dashboard/{name}")
        assert served.status_code == 200, name
    assert (await anonymous.get("/dashboard/%2e%2e%2fadmin-token")).status_code == 404
    assert (await anonymous.get("/dashboard/secret.txt")).status_code == 404
    # Everything the page shows needs a token.
    for path in ("/dashboard/v1/kinds", "/dashboard/v1/whoami", "/telemetry/v1/graph"):
        assert (await anonymous.get(path)).status_code == 401, path
    assert (await anonymous.post("/dashboard/v1/logins")).status_code == 401


async def test_a_login_code_becomes_one_read_only_session_once(
    plane: ControlPlane, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    minted = await client.post("/dashboard/v1/logins")
    assert minted.status_code == 201, minted.text
    code = minted.json()["code"]
    assert minted.json()["path"] == f"/dashboard/#login={code}"

    traded = await anonymous.post("/dashboard/login", json={"code": code})
    assert traded.status_code == 200, traded.text
    assert traded.headers["cache-control"] == "no-store"
    session = {"Authorization": f"Bearer {traded.json()['token']}"}
    again = await anonymous.post("/dashboard/login", json={"code": code})
    assert again.status_code == 403
    assert "gossamer dashboard" in again.json()["message"]
    for body in ({"code": "guessed"}, {}, [], "x" * 5000):
        refused = await anonymous.post("/dashboard/login", json=body)
        assert refused.status_code == 403, body

    who = await anonymous.get("/dashboard/v1/whoami", headers=session)
    assert who.json() == {"name": "dashboard session", "readsMesh": True}
    assert (await anonymous.get("/telemetry/v1/graph", headers=session)).status_code == 200
    assert (await anonymous.get("/debug/v1/proxies", headers=session)).status_code == 200
    listed = await anonymous.get("/api/v1/namespaces/default/services", headers=session)
    assert listed.status_code == 200
    # Read-only: no writes, no new login codes, no taps.
    assert (await anonymous.post("/dashboard/v1/logins", headers=session)).status_code == 403
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}
    created = await anonymous.post(
        "/api/v1/namespaces/default/services", json=service, headers=session
    )
    assert created.status_code == 403
    tap = await anonymous.get("/telemetry/v1/tap", params={"service": "web"}, headers=session)
    assert tap.status_code == 403


async def test_whoami_kinds_and_history_for_the_admin(client: httpx.AsyncClient) -> None:
    who = await client.get("/dashboard/v1/whoami")
    assert who.json() == {"name": "admin", "readsMesh": True}
    kinds = (await client.get("/dashboard/v1/kinds")).json()["items"]
    by_kind = {item["kind"]: item for item in kinds}
    assert by_kind["Service"]["path"] == "/api/v1/services"
    assert by_kind["VirtualService"]["path"] == "/apis/networking.istio.io/v1/virtualservices"
    for item in kinds:
        assert (await client.get(item["path"])).status_code == 200, item
    history = await client.get("/telemetry/v1/history", params={"window": "60"})
    assert history.status_code == 200
    assert history.json()["kind"] == "History"
    assert (await client.get("/telemetry/v1/history", params={"kind": "x"})).status_code == 400
