"""Gateway API status on the stored objects, as a Gateway API controller writes it.

When a Gateway API object, a Service, a Namespace or a ReferenceGrant changes, the control plane
works out (debounced) each HTTPRoute's `status.parents[]` (one entry per parentRef, with the
Accepted and ResolvedRefs conditions and this controller's name) and each served Gateway's
`status.conditions` (Accepted, Programmed) and `status.listeners[]` (attached routes, per
listener), from the same binding the translation routes with (resources/gateway_api_binding.py),
and writes those that changed. So `gossamer get httproute NAME -o yaml` shows what kubectl
would. Every replica computes the same status; a write that lost a race is not retried (the
next change writes again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from gossamer.control.mesh.mirror import StoreMirror
from gossamer.control.store import (
    ConflictError,
    NotFoundError,
    ObjectKey,
    ResourceType,
    Store,
    StoreError,
)
from gossamer.resources.gateway_api_binding import Condition, GatewayApiIndex
from gossamer.resources.kinds.gateway_api import GROUP, Gateway
from gossamer.resources.kinds.gateway_api_routes import HTTPRoute

log = logging.getLogger(__name__)

CONTROLLER_NAME = "gossamer.dev/gateway-controller"
WATCHED = frozenset(
    {
        ResourceType(GROUP, "gateways"),
        ResourceType(GROUP, "gatewayclasses"),
        ResourceType(GROUP, "httproutes"),
        ResourceType(GROUP, "referencegrants"),
        ResourceType("", "services"),
        ResourceType("", "namespaces"),
    }
)
ROUTES = ResourceType(GROUP, "httproutes")
GATEWAYS = ResourceType(GROUP, "gateways")


class GatewayStatus:
    """Follows the mirror; writes Gateway API status after `debounce_s` of quiet."""

    def __init__(self, store: Store, mirror: StoreMirror, debounce_s: float = 0.2) -> None:
        self.store = store
        self.mirror = mirror
        self.debounce_s = debounce_s
        self.writes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def __repr__(self) -> str:
        return f"<GatewayStatus {self.writes} writes>"

    def start(self) -> None:
        """Follow the mirror's changes."""
        self.mirror.subscribe(self._changed)

    async def close(self) -> None:
        """Stop writing."""
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _changed(self, keys: frozenset[ObjectKey]) -> None:
        if not any(key.type in WATCHED for key in keys):
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.debounce_s, self._run)

    def _run(self) -> None:
        self._timer = None
        if self._task is not None and not self._task.done():
            self._again = True  # a change during a pass: one more pass when it ends
            return
        self._task = asyncio.get_running_loop().create_task(self._passes())

    async def _passes(self) -> None:
        self._again = True
        while self._again:
            self._again = False
            await self.write_all()

    async def write_all(self) -> None:
        """Compute every status and write those that differ from what is stored."""
        resources = list(self.mirror.resources.values())
        index = GatewayApiIndex.of(resources)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for resource in resources:
            if isinstance(resource, HTTPRoute):
                key = ObjectKey(ROUTES, resource.namespace, resource.name)
                await self._write(key, route_status(index, resource), now)
            elif isinstance(resource, Gateway) and index.served(resource):
                key = ObjectKey(GATEWAYS, resource.namespace, resource.name)
                await self._write(key, gateway_status(index, resource), now)

    async def _write(self, key: ObjectKey, status: dict[str, Any], now: str) -> None:
        stored = self.mirror.objects.get(key)
        if stored is None:
            return
        old = stored.body.get("status") or {}
        if _without_times(old) == _without_times(status):
            return
        _stamp(status, old, now)
        body = json.loads(json.dumps(stored.body))
        body["metadata"].pop("resourceVersion", None)
        body["status"] = status
        try:
            await self.store.replace(key, body, stored.version)
            self.writes += 1
        except (ConflictError, NotFoundError):
            return  # changed meanwhile: that change schedules another pass
        except StoreError as error:
            log.warning("cannot write the status of %s: %s", key, error)


def route_status(index: GatewayApiIndex, route: HTTPRoute) -> dict[str, Any]:
    """`status.parents[]`: each parentRef with Accepted and ResolvedRefs."""
    resolved = _resolved(index, route)
    parents = []
    for parent in index.parents(route):
        ref = parent.ref.model_dump(by_alias=True, exclude_none=True)
        ref.setdefault("group", GROUP if parent.service is None else "")
        ref.setdefault("kind", "Gateway" if parent.service is None else "Service")
        parents.append(
            {
                "parentRef": ref,
                "controllerName": CONTROLLER_NAME,
                "conditions": _conditions(
                    (parent.accepted, resolved), route.metadata.generation or 0
                ),
            }
        )
    return {"parents": parents}


def gateway_status(index: GatewayApiIndex, gateway: Gateway) -> dict[str, Any]:
    """Accepted and Programmed, and each listener's attached routes."""
    attached: dict[str, int] = {}
    for route in index.routes:
        for parent in index.parents(route):
            for binding in parent.listeners:
                if binding.gateway is gateway:
                    attached[binding.listener.name] = attached.get(binding.listener.name, 0) + 1
    listeners = [
        {
            "name": listener.name,
            "attachedRoutes": attached.get(listener.name, 0),
            "supportedKinds": [{"group": GROUP, "kind": "HTTPRoute"}],
            "conditions": _conditions(
                (
                    Condition("Accepted", True, "Accepted"),
                    Condition("Programmed", True, "Programmed"),
                ),
                gateway.metadata.generation or 0,
            ),
        }
        for listener in gateway.spec.listeners
    ]
    conditions = (
        Condition("Accepted", True, "Accepted", "served by the mesh's ingress gateway"),
        Condition("Programmed", True, "Programmed"),
    )
    return {
        "conditions": _conditions(conditions, gateway.metadata.generation or 0),
        "listeners": listeners,
    }


def _resolved(index: GatewayApiIndex, route: HTTPRoute) -> Condition:
    for rule in route.spec.rules:
        for backend in rule.backend_refs:
            problem = index.backend_problem(route, backend)
            if problem is not None:
                return problem
    return Condition("ResolvedRefs", True, "ResolvedRefs")


def _conditions(conditions: Iterable[Condition], generation: int) -> list[dict[str, Any]]:
    return [
        {
            "type": condition.type,
            "status": "True" if condition.status else "False",
            "reason": condition.reason,
            "message": condition.message,
            "observedGeneration": generation,
        }
        for condition in conditions
    ]


def _without_times(status: Any) -> Any:
    """The status with its lastTransitionTime fields left out, to compare."""
    if isinstance(status, dict):
        return {k: _without_times(v) for k, v in status.items() if k != "lastTransitionTime"}
    if isinstance(status, list):
        return [_without_times(item) for item in status]
    return status


def _stamp(status: Any, old: Any, now: str) -> None:
    """lastTransitionTime on each condition: kept where its status did not change."""
    if isinstance(status, dict):
        if "type" in status and "status" in status and "reason" in status:
            same = isinstance(old, dict) and old.get("status") == status["status"]
            status["lastTransitionTime"] = old.get("lastTransitionTime", now) if same else now
        for key, value in status.items():
            _stamp(value, old.get(key) if isinstance(old, dict) else None, now)
    elif isinstance(status, list):
        olds = old if isinstance(old, list) else []
        for position, item in enumerate(status):
            _stamp(item, olds[position] if position < len(olds) else None, now)
