"""Tokens (401/403), rejected writes (422 with the validator's lines), malformed requests (4xx)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gossamer.control.auth import Principal, Rule
from gossamer.control.server import ControlPlane
from gossamer.resources import validate_paths

from .manifests import MERGE, ROUTES, SERVICES, route, service

ENDPOINTS = [
    ("GET", SERVICES),
    ("POST", SERVICES),
    ("GET", f"{SERVICES}/web"),
    ("DELETE", f"{SERVICES}/web"),
    ("GET", "/apis/networking.istio.io/v1/virtualservices"),
    ("GET", "/openapi.json"),
    ("GET", "/no/such/path"),
]


@pytest.mark.parametrize(("method", "url"), ENDPOINTS)
async def test_no_token_is_401(anonymous: httpx.AsyncClient, method: str, url: str) -> None:
    refused = await anonymous.request(method, url)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert refused.json()["reason"] == "Unauthorized"


@pytest.mark.parametrize(("method", "url"), ENDPOINTS)
async def test_a_wrong_token_is_403(anonymous: httpx.AsyncClient, method: str, url: str) -> None:
    headers = {"Authorization": "Bearer not-the-token"}
    refused = await anonymous.request(method, url, headers=headers)
    assert refused.status_code == 403
    assert refused.json()["reason"] == "Forbidden"


async def test_a_header_that_is_not_bearer_is_401(anonymous: httpx.AsyncClient, token: str) -> None:
    refused = await anonymous.get(SERVICES, headers={"Authorization": f"Basic {token}"})
    assert refused.status_code == 401


async def test_a_principal_is_held_to_its_rules(plane: ControlPlane) -> None:
    reader = Principal("reader", (Rule(verbs=frozenset({"get", "list", "watch"})),))
    plane.tokens.add("read-only-token", reader)
    headers = {"Authorization": "Bearer read-only-token"}
    async with httpx.AsyncClient(base_url=plane.url, headers=headers) as http:
        assert (await http.get(SERVICES)).status_code == 200
        refused = await http.post(SERVICES, json=service("web"))
    assert refused.status_code == 403
    assert refused.json()["message"] == 'reader cannot create services in the namespace "default"'


def _validator_lines(tmp_path: Path, manifest: dict[str, Any]) -> list[str]:
    """What `gossamer validate` prints for the manifest, without the `FILE:LINE: ` prefix."""
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    problems = validate_paths([path]).problems
    return [str(p).removeprefix(f"{p.file}:{p.line}: ") for p in problems]


async def test_an_invalid_object_is_422_with_the_validators_lines(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    manifest = route("reviews")
    manifest["spec"]["http"][0]["timeout"] = "soon"
    manifest["spec"]["http"][0]["retires"] = {"attempts": 3}
    manifest["spec"]["http"][0]["route"][0]["weight"] = "ten"
    rejected = await client.post(ROUTES, json=manifest)
    assert rejected.status_code == 422
    status = rejected.json()
    assert status["reason"] == "Invalid"
    lines = status["message"].split("\n")
    assert lines == _validator_lines(tmp_path, manifest)
    assert len(lines) == 3
    fields = {cause["field"] for cause in status["details"]["causes"]}
    assert fields == {
        "spec.http[0].timeout",
        "spec.http[0].retires",
        "spec.http[0].route[0].weight",
    }
    assert (await client.get(f"{ROUTES}/reviews")).status_code == 404


async def test_422_names_the_line_of_the_body(client: httpx.AsyncClient) -> None:
    text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 0\n"
    rejected = await client.post(SERVICES, content=text)
    [cause] = rejected.json()["details"]["causes"]
    assert cause["field"] == "spec.ports[0].port" and cause["line"] == 7


async def test_a_replace_and_a_patch_are_validated_too(client: httpx.AsyncClient) -> None:
    await client.post(SERVICES, json=service("web"))
    bad = service("web")
    bad["spec"]["ports"][0]["port"] = 70000
    replaced = await client.put(f"{SERVICES}/web", json=bad)
    assert replaced.status_code == 422
    assert replaced.json()["message"] == (
        "Service web: spec.ports[0].port: must be between 1 and 65535, not 70000"
    )
    patched = await client.patch(
        f"{SERVICES}/web", json={"spec": {"sessionAffinty": "None"}}, headers=MERGE
    )
    assert patched.status_code == 422
    assert (
        "spec.sessionAffinty: unknown field (did you mean sessionAffinity?)"
        in (patched.json()["message"])
    )


@pytest.mark.parametrize(
    ("method", "url", "body", "words"),
    [
        ("POST", SERVICES, {**service("web"), "kind": "Deployment"}, "kind in the body"),
        ("POST", SERVICES, {**service("web"), "apiVersion": "v2"}, "apiVersion in the body"),
        (
            "POST",
            SERVICES,
            {**service("web"), "metadata": {"name": "web", "namespace": "prod"}},
            "metadata.namespace in the body (prod)",
        ),
        ("PUT", f"{SERVICES}/api", service("web"), "metadata.name in the body (web)"),
        ("POST", SERVICES, [service("web")], "must be a JSON object"),
        ("GET", f"{SERVICES}?labelSelector=a%3D%3D%3D", None, "invalid label selector"),
        ("GET", f"{SERVICES}?watch=true&resourceVersion=x", None, "resourceVersion"),
        ("GET", f"{SERVICES}?fieldSelector=metadata.name%3Dweb", None, "fieldSelector"),
        ("GET", "/api/v1/namespaces/Not_A_Label/services", None, "invalid namespace"),
    ],
)
async def test_malformed_requests_are_400(
    client: httpx.AsyncClient, method: str, url: str, body: Any, words: str
) -> None:
    if method == "PUT":
        await client.post(SERVICES, json=service("api"))
    refused = await client.request(method, url, json=body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["reason"] == "BadRequest"
    assert words in refused.json()["message"]


async def test_a_body_with_two_documents_is_400(client: httpx.AsyncClient) -> None:
    text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\n"
    refused = await client.post(SERVICES, content=text)
    assert refused.status_code == 400
    assert "exactly one object, not 2" in refused.json()["message"]


async def test_an_unknown_resource_is_404_and_a_wrong_method_405(
    client: httpx.AsyncClient,
) -> None:
    unknown = await client.get("/apis/networking.istio.io/v1/namespaces/default/widgets")
    assert unknown.status_code == 404
    assert (
        unknown.json()["message"] == "the server does not serve widgets in networking.istio.io/v1"
    )
    wrong = await client.post(f"{SERVICES}/web", json=service("web"))
    assert wrong.status_code == 405
    assert wrong.json()["reason"] == "MethodNotAllowed"


async def test_a_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    big = service("web", note="x")
    big["metadata"]["annotations"] = {"blob": "x" * 70_000}
    refused = await client.post(SERVICES, json=big)
    assert refused.status_code == 413


async def test_metadata_that_is_not_a_mapping_is_422(client: httpx.AsyncClient) -> None:
    rejected = await client.post(SERVICES, json={**service("web"), "metadata": "web"})
    assert rejected.status_code == 422
    assert rejected.json()["message"] == (
        "Service (unnamed): metadata: must be a mapping, not the string 'web'"
    )
