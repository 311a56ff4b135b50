"""The OpenAPI description covers every served resource and every reference in it resolves."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from gossamer.control.api.catalog import Catalog


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


async def test_openapi_describes_every_served_resource(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    paths = document["paths"]
    for served in Catalog():
        item = f"{served.base_path}/namespaces/{{namespace}}/{served.plural}/{{name}}"
        assert {"get", "put", "patch", "delete"} <= paths[item].keys(), item
        collection = f"{served.base_path}/namespaces/{{namespace}}/{served.plural}"
        assert {"get", "post"} <= paths[collection].keys(), collection
    vs = paths["/apis/networking.istio.io/v1/namespaces/{namespace}/virtualservices/{name}"]
    assert vs["put"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/VirtualService"
    }
    assert "application/merge-patch+json" in vs["patch"]["requestBody"]["content"]
    assert "422" in vs["put"]["responses"]


async def test_every_reference_in_openapi_resolves(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    missing = {
        ref for ref in _refs(document) if ref.removeprefix("#/components/schemas/") not in schemas
    }
    assert not missing
    ids = [
        operation["operationId"]
        for path in document["paths"].values()
        for key, operation in path.items()
        if key != "parameters"
    ]
    assert len(ids) == len(set(ids))
