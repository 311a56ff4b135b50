"""Gateway API status written by the control plane on the stored objects, as kubectl users read
it: each route's parents with Accepted and ResolvedRefs, each served Gateway's conditions and
its listeners' attached routes; and kept current when the objects they depend on change."""

from __future__ import annotations

from typing import Any

import httpx

from gossamer.control.server import ControlPlane

from .test_mesh_push import CORE, create, eventually_async

GATEWAY_API = "/apis/gateway.networking.k8s.io/v1/namespaces/default"

GATEWAY = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "Gateway",
    "metadata": {"name": "edge"},
    "spec": {
        "gatewayClassName": "istio",
        "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
    },
}
ROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "shop"},
    "spec": {
        "parentRefs": [{"name": "edge"}, {"name": "nowhere"}],
        "rules": [{"backendRefs": [{"name": "shop", "port": 80}]}],
    },
}
SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "shop"},
    "spec": {"selector": {"app": "shop"}, "ports": [{"name": "http", "port": 80}]},
}


def conditions(parent: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in parent["conditions"]}


async def test_routes_and_gateways_get_the_status_a_gateway_api_controller_writes(
    plane: ControlPlane, client: httpx.AsyncClient
) -> None:
    await create(client, f"{GATEWAY_API}/gateways", GATEWAY)
    await create(client, f"{GATEWAY_API}/httproutes", ROUTE)

    async def route_status() -> list[dict[str, Any]]:
        found = (await client.get(f"{GATEWAY_API}/httproutes/shop")).json()
        return list((found.get("status") or {}).get("parents") or [])

    async def written() -> bool:
        return len(await route_status()) == 2

    await eventually_async(written)
    edge, nowhere = await route_status()
    assert edge["parentRef"]["name"] == "edge"
    assert edge["controllerName"] == "gossamer.dev/gateway-controller"
    # The backend Service does not exist yet: attached, not resolved.
    assert conditions(edge) == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("False", "BackendNotFound"),
    }
    assert conditions(nowhere)["Accepted"] == ("False", "NoMatchingParent")
    assert all(c["lastTransitionTime"] for c in edge["conditions"])

    gateway = (await client.get(f"{GATEWAY_API}/gateways/edge")).json()
    assert {c["type"]: c["status"] for c in gateway["status"]["conditions"]} == {
        "Accepted": "True",
        "Programmed": "True",
    }
    assert gateway["status"]["listeners"][0]["attachedRoutes"] == 1

    # The Service arrives: the route's refs resolve, with no edit of the route.
    await create(client, f"{CORE}/services", SERVICE)

    async def resolved() -> bool:
        parents = await route_status()
        return bool(parents) and conditions(parents[0])["ResolvedRefs"] == ("True", "ResolvedRefs")

    await eventually_async(resolved)
