"""Odd requests that once made the API answer 500: each is now a 4xx that says what is wrong.

Found with schemathesis (tests/integration/control/test_api_schema.py) and by reading the code
it pointed at; every request here is sent exactly as it failed.
"""

from __future__ import annotations

import httpx
import pytest

from .manifests import MERGE, ROUTES, SERVICES, route, service

SERVICE_YAML = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("query", "words"),
    [
        # str.isdigit() is true for '²', which int() refuses.
        ("watch=true&resourceVersion=%C2%B2", "resourceVersion must be"),
        ("watch=true&timeoutSeconds=%C2%B2", "timeoutSeconds must be"),
        # int() refuses more than 4300 digits.
        ("watch=true&resourceVersion=" + "9" * 5000, "resourceVersion must be"),
        # Neither store has versions beyond 64 bits.
        ("watch=true&resourceVersion=9223372036854775808", "resourceVersion must be"),
    ],
)
async def test_a_version_that_is_not_a_plain_number_is_400(
    client: httpx.AsyncClient, query: str, words: str
) -> None:
    refused = await client.get(f"{SERVICES}?{query}")
    assert refused.status_code == 400, refused.text
    assert refused.json()["reason"] == "BadRequest"
    assert words in refused.json()["message"]


async def test_a_precondition_that_is_not_a_plain_number_is_400(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.post(SERVICES, json=service("web"))).status_code == 201
    options = {"preconditions": {"resourceVersion": "²"}}
    deleted = await client.request("DELETE", f"{SERVICES}/web", json=options)
    assert deleted.status_code == 400, deleted.text
    assert "preconditions.resourceVersion" in deleted.json()["message"]
    replacement = service("web")
    replacement["metadata"]["resourceVersion"] = "²"
    replaced = await client.put(f"{SERVICES}/web", json=replacement)
    assert replaced.status_code == 400, replaced.text
    assert "metadata.resourceVersion" in replaced.json()["message"]


@pytest.mark.parametrize(
    ("status", "words"),
    [
        ("2001-02-30", "day is out of range for month"),
        ("2001-02-03", "status: a date is not a JSON value; quote it"),
        ("2001-02-03 04:05:06", "status: a datetime is not a JSON value; quote it"),
        ("!!binary aGk=", "status: a bytes is not a JSON value; quote it"),
        ("!!set {a}", "status: a set is not a JSON value; quote it"),
        (".nan", "status: nan is not a JSON number"),
        ("-.inf", "status: -inf is not a JSON number"),
        ("{2001-02-03: a}", "status: the key 2001-02-03 is not a string; quote it"),
        ("9" * 5000, "Exceeds the limit (4300 digits)"),
        ("&loop [*loop]", "nested more than 100 levels deep"),
        (nested(990), "nested"),
    ],
)
async def test_a_yaml_value_that_json_cannot_carry_is_400_and_nothing_is_stored(
    client: httpx.AsyncClient, status: str, words: str
) -> None:
    refused = await client.post(SERVICES, content=f"{SERVICE_YAML}status: {status}\n")
    assert refused.status_code == 400, refused.text
    assert refused.json()["reason"] == "BadRequest"
    assert words in refused.json()["message"]
    assert (await client.get(f"{SERVICES}/web")).status_code == 404
    assert (await client.get(SERVICES)).status_code == 200


async def test_a_key_that_is_not_a_string_is_400(client: httpx.AsyncClient) -> None:
    # Not a crash, but JSON would store the key as "1", which is not what was validated.
    refused = await client.post(SERVICES, content=f"{SERVICE_YAML}status: {{1: a}}\n")
    assert refused.status_code == 400, refused.text
    assert refused.json()["message"] == "status: the key 1 is not a string; quote it"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('{"status": NaN}', "NaN is not a JSON number"),
        ('{"status": -Infinity}', "-Infinity is not a JSON number"),
        ('{"status": ' + nested(990) + "}", "nested"),
        ('{"status": ' + nested(101) + "}", "status is nested more than 100 levels deep"),
    ],
)
async def test_a_patch_that_json_cannot_carry_is_400_and_the_object_is_untouched(
    client: httpx.AsyncClient, body: str, words: str
) -> None:
    created = await client.post(SERVICES, json=service("web"))
    refused = await client.patch(f"{SERVICES}/web", content=body, headers=MERGE)
    assert refused.status_code == 400, refused.text
    assert words in refused.json()["message"]
    fetched = await client.get(f"{SERVICES}/web")
    assert fetched.status_code == 200
    assert fetched.json() == created.json()


async def test_delete_options_nested_too_deeply_are_400(client: httpx.AsyncClient) -> None:
    assert (await client.post(SERVICES, json=service("web"))).status_code == 201
    body = '{"preconditions": ' + nested(990) + "}"
    refused = await client.request("DELETE", f"{SERVICES}/web", content=body)
    assert refused.status_code == 400, refused.text
    assert (await client.get(f"{SERVICES}/web")).status_code == 200


async def test_a_body_nested_within_the_bound_is_stored(client: httpx.AsyncClient) -> None:
    body = service("web")
    status: list[object] = []
    for _ in range(98):
        status = [status]
    body["status"] = status
    created = await client.post(SERVICES, json=body)
    assert created.status_code == 201, created.text
    assert created.json()["status"] == body["status"]


async def test_a_patch_through_another_version_with_the_same_schema_applies(
    client: httpx.AsyncClient,
) -> None:
    v1beta1 = "/apis/networking.istio.io/v1beta1/namespaces/default/virtualservices"
    assert (await client.post(v1beta1, json=route("reviews", "v1beta1"))).status_code == 201
    patch = {"metadata": {"labels": {"team": "a"}}}
    patched = await client.patch(f"{ROUTES}/reviews", json=patch, headers=MERGE)
    assert patched.status_code == 200, patched.text
    assert patched.json()["apiVersion"] == "networking.istio.io/v1"
    assert patched.json()["metadata"]["labels"] == {"team": "a"}
