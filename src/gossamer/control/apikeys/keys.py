"""The API behind `gossamer apikey`: create a key (the secret shown once), list, revoke.

A revoked key gets an end (`expiresAt`), now or later: a later end is a rotation's overlap, in
which old and new keys both work. Every change reaches the gateways with their next snapshot.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gossamer.control.api.guard import authorize
from gossamer.control.api.status import ApiError
from gossamer.control.apikeys.records import API_KEYS, new_key
from gossamer.control.auth import MESH_GROUP, Access, Verb
from gossamer.control.mesh.service import Mesh
from gossamer.control.store import ObjectKey, StoredObject
from gossamer.resources.kinds.gossamer_kinds import ApiProduct

MAX_EXPIRY_S = 10 * 365 * 86400.0
"""The longest a key may be given to live, or a revocation put off."""


class ApiKeyEndpoints:
    """`/apikeys/v1/namespaces/{namespace}/...`: the API behind `gossamer apikey`."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh

    def routes(self) -> list[Route]:
        """The routes to mount."""
        base = "/apikeys/v1/namespaces/{namespace}"
        return [
            Route(base + "/keys", self.list, methods=["GET"]),
            Route(base + "/keys", self.create, methods=["POST"]),
            Route(base + "/keys/{name}/revoke", self.revoke, methods=["POST"]),
        ]

    async def create(self, request: Request) -> Response:
        """A new key for a consumer of a product; the secret is in this answer only."""
        namespace = request.path_params["namespace"]
        authorize(request, Access(Verb.CREATE, MESH_GROUP, API_KEYS.plural, namespace))
        body = await _json(request)
        product, consumer = body.get("product"), body.get("consumer")
        if not isinstance(product, str) or not isinstance(consumer, str):
            raise ApiError(422, "Invalid", 'the body must be {"product": NAME, "consumer": NAME}')
        self._check_consumer(namespace, product, consumer)
        secret, key, record = new_key(namespace, product, consumer)
        expires_in = body.get("expiresIn")
        if expires_in is not None:
            record["spec"]["expiresAt"] = time.time() + _seconds(expires_in, "expiresIn")
        stored = await self.mesh.mirror.store.create(key, record)
        return JSONResponse({**_summary(stored), "key": secret}, status_code=201)

    async def list(self, request: Request) -> Response:
        """Every key of the namespace (of one product with `?product=`), without secrets."""
        namespace = request.path_params["namespace"]
        authorize(request, Access(Verb.LIST, MESH_GROUP, API_KEYS.plural, namespace))
        product = request.query_params.get("product")
        items = [
            _summary(stored)
            for stored in self.mesh.mirror.of_type(API_KEYS)
            if stored.key.namespace == namespace
            and (product is None or stored.body.get("spec", {}).get("product") == product)
        ]
        items.sort(key=lambda item: (item["product"], item["consumer"], item["created"]))
        return JSONResponse({"kind": "ApiKeyList", "items": items})

    async def revoke(self, request: Request) -> Response:
        """End a key now, or after `{"after": SECONDS}` (a rotation's overlap)."""
        namespace, name = request.path_params["namespace"], request.path_params["name"]
        authorize(request, Access(Verb.UPDATE, MESH_GROUP, API_KEYS.plural, namespace, name))
        body = await _json(request)
        after = _seconds(body.get("after", 0), "after")
        store = self.mesh.mirror.store
        stored = await store.get(ObjectKey(API_KEYS, namespace, name))
        record = dict(stored.body)
        spec = dict(record.get("spec", {}))
        end = time.time() + after
        current = float(spec.get("expiresAt", 0.0) or 0.0)
        spec["expiresAt"] = min(end, current) if current else end
        record["spec"] = spec
        updated = await store.replace(stored.key, record, expected_version=stored.version)
        return JSONResponse(_summary(updated))

    def _check_consumer(self, namespace: str, product: str, consumer: str) -> None:
        for resource in self.mesh.mirror.resources.values():
            if (
                isinstance(resource, ApiProduct)
                and resource.namespace == namespace
                and resource.name == product
            ):
                names = [c.name for c in resource.spec.consumers]
                if consumer not in names:
                    known = ", ".join(names) or "none"
                    raise ApiError(
                        422, "Invalid", f"ApiProduct {product} has no consumer {consumer} ({known})"
                    )
                return
        raise ApiError(404, "NotFound", f"no ApiProduct {product} in namespace {namespace}")


def _summary(stored: StoredObject) -> dict[str, Any]:
    spec = stored.body.get("spec", {})
    expires = float(spec.get("expiresAt", 0.0) or 0.0)
    return {
        "name": stored.key.name,
        "namespace": stored.key.namespace,
        "product": spec.get("product", ""),
        "consumer": spec.get("consumer", ""),
        "created": stored.body.get("metadata", {}).get("creationTimestamp", ""),
        "expiresAt": expires or None,
        "state": "revoked" if expires and expires <= time.time() else "active",
    }


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ApiError(422, "Invalid", "the body must be a JSON object")
    return body


def _seconds(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(422, "Invalid", f"{field} must be a number of seconds")
    if not 0 <= value <= MAX_EXPIRY_S:
        raise ApiError(422, "Invalid", f"{field} must be between 0 and {MAX_EXPIRY_S:.0f}")
    return float(value)
