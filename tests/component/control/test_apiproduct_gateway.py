"""ApiProduct at the gateway: keys, plans, rate limits and quotas, with a real control plane
and gateways that take their snapshots and budgets from it over the config stream."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gossamer.control.server import ControlPlane
from gossamer.resources import load_paths

from ..proxy.backend import Backend
from .test_mesh_gateway_tls import gateway
from .test_mesh_push import CORE, ISTIO, create, entry, eventually_async, reviews_service

NETWORKING = "/apis/networking.k8s.io/v1/namespaces/default/ingresses"
PRODUCTS = "/apis/gossamer.dev/v1alpha1/namespaces/default/apiproducts"
KEYS = "/apikeys/v1/namespaces/default/keys"
HOST = "api.example"
DEMO_KEY = "acme-demo-key"


def ingress() -> dict[str, Any]:
    backend = {"service": {"name": "reviews", "port": {"number": 9080}}}
    path = {"path": "/", "pathType": "Prefix", "backend": backend}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "api"},
        "spec": {"rules": [{"host": HOST, "http": {"paths": [path]}}]},
    }


def product(
    rate: dict[str, Any] | None = None, quota: dict[str, Any] | None = None
) -> dict[str, Any]:
    partner: dict[str, Any] = {"name": "partner", "routes": ["records"]}
    if rate is not None:
        partner["rateLimit"] = rate
    if quota is not None:
        partner["quota"] = quota
    digest = hashlib.sha256(DEMO_KEY.encode()).hexdigest()
    return {
        "apiVersion": "gossamer.dev/v1alpha1",
        "kind": "ApiProduct",
        "metadata": {"name": "records"},
        "spec": {
            "hosts": [HOST],
            "routes": [
                {"name": "records", "uri": {"prefix": "/records"}, "methods": ["GET"]},
                {"name": "admin", "uri": {"prefix": "/admin"}},
            ],
            "apiKey": {"header": "x-api-key", "queryParam": "apikey"},
            "plans": [partner],
            "consumers": [{"name": "acme", "plan": "partner", "keys": [{"sha256": digest}]}],
        },
    }


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    server = await Backend("records").start()
    yield server
    await server.stop()


async def mesh(client: httpx.AsyncClient, backend: Backend, body: dict[str, Any]) -> None:
    await create(client, f"{CORE}/services", reviews_service())
    await create(client, f"{ISTIO}/workloadentries", entry("records-0", backend.port, "v1"))
    await create(client, NETWORKING, ingress())
    await create(client, PRODUCTS, body)


@contextlib.asynccontextmanager
async def gateway_client(
    plane: ControlPlane, token: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        gateway(plane.url, token, tmp_path) as (http, _),
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{http}", headers={"host": HOST}, timeout=5.0
        ) as api,
    ):

        async def enforced() -> bool:
            return (await api.get("/records")).status_code == 401

        await eventually_async(enforced)
        yield api


async def test_keys_and_plans_decide_401_403_and_200(
    plane: ControlPlane, client: httpx.AsyncClient, token: str, backend: Backend, tmp_path: Path
) -> None:
    await mesh(client, backend, product())
    async with gateway_client(plane, token, tmp_path) as api:
        missing = await api.get("/records")
        assert missing.status_code == 401
        assert "api key required" in missing.headers["x-gossamer-reason"]
        assert (await api.get("/records", headers={"x-api-key": "wrong"})).status_code == 401
        ok = await api.get("/records/1", headers={"x-api-key": DEMO_KEY})
        assert ok.status_code == 200, ok.text
        assert "ratelimit" not in ok.headers, "a plan without limits has no RateLimit fields"
        assert (await api.get(f"/records?apikey={DEMO_KEY}")).status_code == 200
        # The plan includes "records" only.
        denied = await api.get("/admin", headers={"x-api-key": DEMO_KEY})
        assert denied.status_code == 403
        assert "does not include" in denied.headers["x-gossamer-reason"]
        # Outside the product: no key needed.
        assert (await api.get("/public")).status_code == 200
        # Bad input.
        both = await api.get(f"/records?apikey={DEMO_KEY}", headers={"x-api-key": DEMO_KEY})
        assert both.status_code == 400
        assert "both header and query" in both.headers["x-gossamer-reason"]
        twice = await api.get("/records", headers=[("x-api-key", "a"), ("x-api-key", "b")])
        assert twice.status_code == 400
        malformed = await api.get("/records", headers={"x-api-key": "x" * 300})
        assert malformed.status_code == 401
        assert malformed.headers["x-gossamer-reason"] == "malformed api key"
        spaced = await api.get("/records?apikey=a%20b")
        assert spaced.status_code == 401
        huge = await api.get("/records", headers={"x-api-key": "k" * 70000})
        assert huge.status_code == 431
        # A plan without rate limit or quota spends no budget: no lease per request.
        for _ in range(20):
            assert (await api.get("/records", headers={"x-api-key": DEMO_KEY})).status_code == 200
        assert plane.mesh.leases.granted == 0


async def test_issued_keys_work_and_a_revoked_one_is_refused_within_a_second(
    plane: ControlPlane, client: httpx.AsyncClient, token: str, backend: Backend, tmp_path: Path
) -> None:
    await mesh(client, backend, product())
    async with gateway_client(plane, token, tmp_path) as api:
        created = await client.post(KEYS, json={"product": "records", "consumer": "acme"})
        assert created.status_code == 201, created.text
        secret, name = created.json()["key"], created.json()["name"]
        listed = (await client.get(KEYS)).json()["items"]
        assert [item["name"] for item in listed] == [name]
        assert all("key" not in item and "sha256" not in item for item in listed)

        async def works() -> bool:
            return (await api.get("/records", headers={"x-api-key": secret})).status_code == 200

        await eventually_async(works)
        revoked = await client.post(f"{KEYS}/{name}/revoke", json={})
        assert revoked.json()["state"] == "revoked"
        started = time.monotonic()
        while (await api.get("/records", headers={"x-api-key": secret})).status_code != 401:
            assert time.monotonic() - started < 1.0, "revocation took longer than 1 s"
            await asyncio.sleep(0.01)
        assert (await api.get("/records", headers={"x-api-key": DEMO_KEY})).status_code == 200
        unknown = await client.post(KEYS, json={"product": "records", "consumer": "nobody"})
        assert unknown.status_code == 422


async def test_a_rate_of_20_per_second_with_burst_40_admits_the_burst_then_429(
    plane: ControlPlane, client: httpx.AsyncClient, token: str, backend: Backend, tmp_path: Path
) -> None:
    await mesh(client, backend, product(rate={"requests": 20, "per": "1s", "burst": 40}))
    async with gateway_client(plane, token, tmp_path) as api:
        headers = {"x-api-key": DEMO_KEY}
        started = time.monotonic()
        statuses = [(await api.get("/records", headers=headers)).status_code for _ in range(80)]
        elapsed = time.monotonic() - started
        admitted = statuses.count(200)
        assert set(statuses) <= {200, 429}
        # The burst, and what the rate earned meanwhile (plus one slice in flight).
        assert 40 <= admitted <= 40 + 20 * elapsed + 5, (admitted, elapsed)
        limited = await api.get("/records", headers=headers)
        while limited.status_code != 429:
            limited = await api.get("/records", headers=headers)
        assert limited.headers["retry-after"] == "1"
        assert limited.headers["ratelimit-policy"] == '"partner";q=40;w=1'
        assert limited.headers["ratelimit"] == '"partner";r=0;t=1'


def istio_gateway(name: str, selector: dict[str, str]) -> dict[str, Any]:
    server = {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name},
        "spec": {"selector": selector, "servers": [server]},
    }


async def test_a_product_applies_only_on_the_gateways_it_names(
    plane: ControlPlane, client: httpx.AsyncClient, token: str, backend: Backend, tmp_path: Path
) -> None:
    # `public` selects the mesh's ingress gateway (istio: ingressgateway), `partners` another.
    await create(client, f"{ISTIO}/gateways", istio_gateway("public", {"istio": "ingressgateway"}))
    await create(client, f"{ISTIO}/gateways", istio_gateway("partners", {"app": "partners-gw"}))
    elsewhere = product()
    elsewhere["spec"]["gateways"] = ["partners"]
    await mesh(client, backend, elsewhere)
    async with (
        gateway(plane.url, token, tmp_path) as (http, _),
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{http}", headers={"host": HOST}, timeout=5.0
        ) as api,
    ):

        async def routed() -> bool:
            return (await api.get("/records")).status_code != 404

        await eventually_async(routed)
        # Its first snapshot held the product: another gateway's product is not enforced here.
        open_door = await api.get("/records")
        assert open_door.status_code == 200, open_door.headers.get("x-gossamer-reason")
        (await client.delete(f"{PRODUCTS}/records")).raise_for_status()
        here = product()
        here["spec"]["gateways"] = ["default/public"]
        await create(client, PRODUCTS, here)

        async def enforced() -> bool:
            return (await api.get("/records")).status_code == 401

        await eventually_async(enforced)
        ok = await api.get("/records", headers={"x-api-key": DEMO_KEY})
        assert ok.status_code == 200


async def test_a_key_given_by_file_works_once_the_manifest_is_applied(
    plane: ControlPlane, client: httpx.AsyncClient, token: str, backend: Backend, tmp_path: Path
) -> None:
    body = product()
    body["spec"]["consumers"][0]["keys"] = [{"fromFile": "keys/acme.key"}]
    folder = tmp_path / "manifests"
    (folder / "keys").mkdir(parents=True)
    (folder / "keys" / "acme.key").write_text("acme-key-from-a-file\n", encoding="utf-8")
    (folder / "records.json").write_text(json.dumps(body), encoding="utf-8")
    # What `gossamer apply -f` and `up` send: the documents as loaded.
    [loaded] = load_paths([folder]).resources
    assert "acme-key-from-a-file" not in json.dumps(loaded.document.data)
    await mesh(client, backend, loaded.document.data)
    async with gateway_client(plane, token, tmp_path) as api:
        ok = await api.get("/records", headers={"x-api-key": "acme-key-from-a-file"})
        assert ok.status_code == 200, ok.headers.get("x-gossamer-reason")
        stored = (await client.get(f"{PRODUCTS}/records")).json()
        assert "sha256" in stored["spec"]["consumers"][0]["keys"][0]


def ratelimit_items(value: str) -> dict[str, dict[str, int]]:
    """A RateLimit or RateLimit-Policy field: each policy's name to its parameters."""
    items: dict[str, dict[str, int]] = {}
    for member in value.split(","):
        name, *params = member.strip().split(";")
        items[name.strip('"')] = {k: int(v) for k, v in (param.split("=") for param in params)}
    return items


async def test_admitted_responses_carry_the_plans_ratelimit_fields(
    plane: ControlPlane, client: httpx.AsyncClient, token: str, backend: Backend, tmp_path: Path
) -> None:
    rate = {"requests": 20, "per": "1s", "burst": 40}
    await mesh(client, backend, product(rate=rate, quota={"requests": 1000, "period": "day"}))
    async with gateway_client(plane, token, tmp_path) as api:
        headers = {"x-api-key": DEMO_KEY}
        seen: list[dict[str, dict[str, int]]] = []
        response = await api.get("/records", headers=headers)
        while response.status_code == 200:
            assert ratelimit_items(response.headers["ratelimit-policy"]) == {
                "partner": {"q": 40, "w": 1},
                "partner-quota": {"q": 1000, "w": 86400},
            }
            seen.append(ratelimit_items(response.headers["ratelimit"]))
            response = await api.get("/records", headers=headers)
        assert response.status_code == 429
        assert len(seen) >= 40
        first, last = seen[0], seen[-1]
        # The bucket starts full and is spent; the fields follow it lease by lease.
        assert first["partner"]["r"] >= 30, seen[:3]
        assert last["partner"]["r"] <= 10, seen[-3:]
        assert all(0 <= item["partner"]["t"] <= 2 for item in seen)
        quota = [item["partner-quota"] for item in seen]
        assert all(990 - len(seen) <= q["r"] <= 1000 for q in quota), quota[-3:]
        assert all(0 < q["t"] <= 86400 for q in quota)


async def test_a_quota_counts_across_a_gateway_restart(
    plane: ControlPlane, client: httpx.AsyncClient, token: str, backend: Backend, tmp_path: Path
) -> None:
    await mesh(client, backend, product(quota={"requests": 30, "period": "month"}))
    headers = {"x-api-key": DEMO_KEY}
    async with gateway_client(plane, token, tmp_path) as api:
        first = [(await api.get("/records", headers=headers)).status_code for _ in range(20)]
    assert first.count(200) == 20
    async with gateway_client(plane, token, tmp_path) as api:
        second = [(await api.get("/records", headers=headers)).status_code for _ in range(20)]
        # The first gateway's unspent lease is lost with it: at most one slice fewer.
        assert 10 - 1 <= second.count(200) <= 10, second
        over = await api.get("/records", headers=headers)
        assert over.status_code == 429
        assert "quota" in over.headers["x-gossamer-reason"]
        assert int(over.headers["retry-after"]) > 1


async def test_two_gateways_share_one_limit(
    plane: ControlPlane, client: httpx.AsyncClient, token: str, backend: Backend, tmp_path: Path
) -> None:
    await mesh(client, backend, product(rate={"requests": 20, "per": "1s", "burst": 20}))
    headers = {"x-api-key": DEMO_KEY}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        gateway_client(plane, token, tmp_path / "a") as one,
        gateway_client(plane, token, tmp_path / "b") as two,
    ):
        # Paced, not one after another: each gateway's requests leave at their times whatever
        # the others' answers (as independent clients would send them).
        paced = {"one": (one, 60.0), "two": (two, 30.0)}
        started = time.monotonic()
        last_sent, first_answer = started, 0.0

        async def send(api: httpx.AsyncClient, at: float) -> bool:
            nonlocal last_sent, first_answer
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            last_sent = max(last_sent, time.monotonic())
            response = await api.get("/records", headers=headers)
            first_answer = first_answer or time.monotonic()
            return response.is_success

        runs = {
            name: [asyncio.create_task(send(api, i / rate)) for i in range(int(3 * rate))]
            for name, (api, rate) in paced.items()
        }
        admitted = {name: sum(await asyncio.gather(*tasks)) for name, tasks in runs.items()}
        total = sum(admitted.values())
        # Never more than the shared budget until the last answer. Less by at most a lease
        # slice held by each gateway and a slice of credit each has not come back for, over the
        # time from the first answer (the budget's first lease is answered by then) to the last
        # request.
        most = 20 + 20 * (time.monotonic() - started)
        least = 20 + 20 * (last_sent - first_answer) - 2 * 3 - 2 * 2
        assert least <= total <= most + 1, (admitted, least, most)
        # Shared by demand: the second gateway, with a third of the requests, gets about a third
        # (the burst goes to whoever asks first). First come, first served gave it 15 to 25%.
        assert 0.28 * total <= admitted["two"] < admitted["one"], admitted


OPENAPI = """openapi: 3.0.3
info: {title: records-service, version: "3.0.0"}
paths:
  /records:
    get: {summary: List records, responses: {"200": {description: the records}}}
    post: {summary: Add a record, responses: {"201": {description: added}}}
  /admin/reset:
    post: {summary: Reset, responses: {"204": {description: done}}}
"""


async def test_the_gateway_serves_the_products_documentation_without_a_key(
    plane: ControlPlane, client: httpx.AsyncClient, token: str, backend: Backend, tmp_path: Path
) -> None:
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "records-openapi"},
        "data": {"openapi.yaml": OPENAPI},
    }
    await create(client, f"{CORE}/configmaps", config_map)
    body = product()
    body["spec"]["description"] = "Records for partners"
    body["spec"]["openapi"] = {
        "title": "Records API",
        "specs": [{"configMapKeyRef": {"name": "records-openapi", "key": "openapi.yaml"}}],
    }
    await mesh(client, backend, body)
    async with gateway_client(plane, token, tmp_path) as api:
        spec = await api.get("/docs/openapi.json")
        assert spec.status_code == 200, spec.text
        assert spec.headers["content-type"] == "application/json"
        document = spec.json()
        # The product's routes: GET under /records, anything under /admin; POST /records is
        # the service's, not the product's.
        assert {p: sorted(ops) for p, ops in document["paths"].items()} == {
            "/admin/reset": ["post"],
            "/records": ["get"],
        }
        assert document["info"]["title"] == "Records API"
        assert document["servers"] == [{"url": f"https://{HOST}"}]
        assert document["components"]["securitySchemes"]["apiKeyHeader"]["name"] == "x-api-key"
        html = await api.get("/docs")
        assert html.status_code == 200
        assert html.headers["content-type"].startswith("text/html")
        assert "List records" in html.text and "Records API" in html.text
        assert (await api.post("/docs")).status_code == 405
        # The API itself still wants its key.
        assert (await api.get("/records")).status_code == 401


async def test_a_products_header_changes_its_consumer_upstream_and_a_plans_body_limit(
    plane: ControlPlane, client: httpx.AsyncClient, token: str, backend: Backend, tmp_path: Path
) -> None:
    body = product()
    spec = body["spec"]
    spec["routes"].append({"name": "upload", "uri": {"prefix": "/upload"}, "methods": ["POST"]})
    spec["plans"][0]["routes"] = ["records", "upload"]
    spec["plans"][0]["maxRequestBytes"] = 1000
    spec["headers"] = {
        "request": {"set": {"x-partner-api": "v1"}, "remove": ["x-internal"]},
        "response": {"add": {"x-api-product": "records"}, "remove": ["x-asset-version"]},
    }
    await mesh(client, backend, body)
    key = {"x-api-key": DEMO_KEY}
    async with gateway_client(plane, token, tmp_path) as api:
        sent = {**key, "x-internal": "secret", "x-api-consumer": "someone-else"}
        answered = await api.get("/records/1", headers=sent)
        assert answered.status_code == 200, answered.text
        assert answered.headers["x-api-product"] == "records"
        received = backend.requests[-1]
        assert received.header("x-partner-api") == "v1"
        assert received.header("x-internal") is None
        # The consumer the key belongs to, whatever the client claimed.
        assert [v for k, v in received.headers if k.lower() == "x-api-consumer"] == ["acme"]
        # Outside the product nothing changes.
        outside = await api.get("/public", headers={"x-internal": "kept"})
        assert "x-api-product" not in outside.headers
        assert backend.requests[-1].header("x-internal") == "kept"

        small = await api.post("/upload", headers=key, content=b"x" * 1000)
        assert small.status_code == 200
        large = await api.post("/upload", headers=key, content=b"x" * 1001)
        assert large.status_code == 413
        assert "larger than plan partner allows (1000 bytes)" in large.headers["x-gossamer-reason"]

        # A chunked body has no length up front: it is counted as it comes, and refused once
        # it passes the limit (the client reads the 413 after sending what it could).
        port = int(str(api.base_url).rsplit(":", 1)[1].rstrip("/"))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"POST /upload HTTP/1.1\r\nhost: {HOST}\r\nx-api-key: {DEMO_KEY}\r\n"
            "transfer-encoding: chunked\r\n\r\n"
        )
        writer.write(head.encode() + (b"258\r\n" + b"y" * 600 + b"\r\n") * 2)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert not any(r.body.startswith(b"y" * 1200) for r in backend.requests)


CHECKED = """openapi: 3.0.3
info: {title: records, version: "1"}
paths:
  /records:
    get:
      parameters:
        - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100}}
        - {name: x-tenant, in: header, required: true, schema: {type: string}}
      responses: {"200": {description: ok}}
  /upload:
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Record"}
      responses: {"201": {description: added}}
components:
  schemas:
    Record:
      type: object
      required: [name, size]
      properties:
        name: {type: string, minLength: 1}
        size: {type: integer, minimum: 0}
"""


async def test_requests_are_checked_against_the_document_when_the_product_asks(
    plane: ControlPlane, client: httpx.AsyncClient, token: str, backend: Backend, tmp_path: Path
) -> None:
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "checked-openapi"},
        "data": {"openapi.yaml": CHECKED},
    }
    await create(client, f"{CORE}/configmaps", config_map)
    body = product()
    spec = body["spec"]
    spec["routes"].append({"name": "upload", "uri": {"prefix": "/upload"}, "methods": ["POST"]})
    spec["plans"][0]["routes"] = ["records", "upload"]
    spec["openapi"] = {
        "validateRequests": True,
        "specs": [{"configMapKeyRef": {"name": "checked-openapi", "key": "openapi.yaml"}}],
    }
    await mesh(client, backend, body)
    key = {"x-api-key": DEMO_KEY}
    async with gateway_client(plane, token, tmp_path) as api:
        tenant = {**key, "x-tenant": "acme"}

        async def refused(response: httpx.Response, field: str) -> None:
            assert response.status_code == 400, response.text
            assert response.json()["field"] == field, response.text
            assert "does not match the API" in response.headers["x-gossamer-reason"]

        await refused(await api.get("/records", headers=key), "header.x-tenant")
        await refused(await api.get("/records?limit=abc", headers=tenant), "query.limit")
        await refused(await api.get("/records?limit=500", headers=tenant), "query.limit")
        assert (await api.get("/records?limit=5", headers=tenant)).status_code == 200
        # Paths the document does not describe are not its business.
        assert (await api.get("/records/1", headers=key)).status_code == 200

        before = len(backend.requests)
        await refused(await api.post("/upload", headers=key, json={"name": "a"}), "body.size")
        await refused(await api.post("/upload", headers=key, content=b"{not json"), "body")
        await refused(await api.post("/upload", headers=key), "body")
        await refused(
            await api.post("/upload", headers=key, json={"name": "a", "size": -1}), "body.size"
        )
        assert len(backend.requests) == before  # nothing refused reached the upstream
        good = await api.post("/upload", headers=key, json={"name": "a", "size": 3})
        assert good.status_code == 200, good.text
        assert backend.requests[-1].body == b'{"name":"a","size":3}'


async def test_a_pipelined_request_with_a_body_queued_behind_a_slow_one_is_served(
    plane: ControlPlane, client: httpx.AsyncClient, token: str, backend: Backend, tmp_path: Path
) -> None:
    body = product()
    body["spec"]["routes"].append({"name": "upload", "uri": {"prefix": "/upload"}})
    body["spec"]["plans"][0]["routes"] = ["records", "upload"]
    await mesh(client, backend, body)
    async with gateway_client(plane, token, tmp_path) as api:
        port = int(str(api.base_url).rsplit(":", 1)[1].rstrip("/"))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        common = f"host: {HOST}\r\nx-api-key: {DEMO_KEY}\r\n"
        writer.write(
            f"GET /records HTTP/1.1\r\n{common}x-delay: 0.3\r\n\r\n".encode()
            + f"POST /upload HTTP/1.1\r\n{common}content-length: 5\r\n\r\nhello".encode()
            + f"GET /records HTTP/1.1\r\n{common}connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.count(b"HTTP/1.1 200") == 3, answer[:600]
        assert any(r.body == b"hello" for r in backend.requests)
