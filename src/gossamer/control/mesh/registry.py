"""The registry: workload instances, registered by their proxies, as Istio WorkloadEntries.

A proxy's stream is its registration and its heartbeat (WebSocket pings): when it connects
with an instance address, its replica writes a WorkloadEntry named after the workload and the
address, labelled as the Deployment's pods are, with a `Healthy` condition the proxy's `Health`
messages keep current. When the stream ends the entry is marked disconnected; it is deleted once
it stayed so for `ttl_s`, unless the proxy came back (to this replica or another). Each replica
also writes a lease (`controlplanes` in the `gossamer.dev` group) every `ttl_s / 3`; entries whose
replica's lease lapsed are collected by any replica that is alive. This is what Istio's
WorkloadEntry auto-registration does with its `connectedAt`/`disconnectedAt` annotations.

A replica that just started collects nothing for `grace_s`: after a restart (or the death of
the replica that held them), every entry's proxy is disconnected, and deleting entries before
the proxies had time to reconnect would withdraw endpoints that still serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gossamer.control.mesh.mirror import StoreMirror
from gossamer.control.store import (
    ConflictError,
    NotFoundError,
    ObjectKey,
    ResourceType,
    Store,
    StoredObject,
    StoreError,
)
from gossamer.snapshot.protocol import Instance

log = logging.getLogger(__name__)

ENTRIES = ResourceType("networking.istio.io", "workloadentries")
LEASES = ResourceType("gossamer.dev", "controlplanes")
LEASE_NAMESPACE = "gossamer-system"

CONTROLLER = "gossamer.dev/controller"
WORKLOAD = "gossamer.dev/workload"
CONNECTED_AT = "gossamer.dev/connected-at"
DISCONNECTED_AT = "gossamer.dev/disconnected-at"
INBOUND_PORT = "gossamer.dev/inbound-port"


@dataclass(frozen=True, slots=True)
class Registration:
    """What the registry needs to write one instance's entry."""

    workload: str
    namespace: str
    instance: Instance
    labels: Mapping[str, str]
    service_account: str


def entry_name(workload: str, instance: Instance) -> str:
    """One name per instance address, so that a reconnect (anywhere) rewrites the same entry."""
    digest = hashlib.sha256(f"{instance.address}:{instance.port}".encode()).hexdigest()[:10]
    return f"{workload[:52]}-{digest}"


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None


class Registry:
    """Writes this replica's instances and lease; collects instances nobody keeps alive."""

    def __init__(
        self,
        store: Store,
        mirror: StoreMirror,
        replica: str,
        *,
        url: str = "",
        ttl_s: float = 30.0,
        grace_s: float = 15.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.mirror = mirror
        self.replica = replica
        self.url = url
        self.ttl_s = ttl_s
        self.grace_s = grace_s
        self.now = now
        self.started = now()
        self.status: Callable[[], list[dict[str, Any]]] = list
        """What the lease reports about this replica's proxies (set by the distributor)."""
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Registry replica={self.replica} ttl={self.ttl_s}s>"

    def start(self) -> None:
        """Renew the lease and collect expired entries every `ttl_s / 3`."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop renewing (the lease lapses by itself)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def register(self, registration: Registration, ready: bool) -> ObjectKey:
        """Write (or take over) the instance's entry, connected to this replica."""
        instance = registration.instance
        key = ObjectKey(
            ENTRIES, registration.namespace, entry_name(registration.workload, instance)
        )
        now = _timestamp(self.now())
        labels = dict(registration.labels)
        spec: dict[str, Any] = {"address": instance.address, "labels": labels}
        if registration.service_account:
            spec["serviceAccount"] = registration.service_account
        if instance.zone:
            spec["locality"] = instance.zone
        if instance.ports:
            spec["ports"] = dict(instance.ports)
        body = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadEntry",
            "metadata": {
                "name": key.name,
                "namespace": key.namespace,
                "labels": labels,
                "annotations": {
                    CONTROLLER: self.replica,
                    WORKLOAD: registration.workload,
                    CONNECTED_AT: now,
                    INBOUND_PORT: str(instance.port),
                },
                "creationTimestamp": now.split(".", maxsplit=1)[0] + "Z",
            },
            "spec": spec,
            "status": {"conditions": [_healthy(ready, now)]},
        }
        await self._put(key, body)
        return key

    async def set_health(self, key: ObjectKey, ready: bool, message: str = "") -> None:
        """Record the instance's readiness in its `Healthy` condition (no write when the
        condition already says so: a reconnecting proxy registered ready confirms it)."""
        await self._edit(key, lambda body: _with_health(body, ready, message, self.now()))

    async def disconnected(self, key: ObjectKey) -> None:
        """The proxy's stream ended: mark the entry; it goes after `ttl_s` unless taken over."""
        stamp = _timestamp(self.now())

        def mark(body: dict[str, Any]) -> dict[str, Any] | None:
            annotations = body["metadata"].setdefault("annotations", {})
            if annotations.get(CONTROLLER) != self.replica:
                return None  # another replica took it over: not ours to mark
            annotations[DISCONNECTED_AT] = stamp
            body["status"] = {"conditions": [_healthy(False, stamp, "proxy disconnected")]}
            return body

        await self._edit(key, mark)

    async def collect(self) -> int:
        """Delete entries disconnected for `ttl_s` or held by a replica whose lease lapsed
        (nothing during the grace after this replica started)."""
        now = self.now()
        if (now - self.started).total_seconds() < self.grace_s:
            return 0
        alive = {
            stored.key.name
            for stored in self.mirror.of_type(LEASES)
            if not self._lapsed(stored.body.get("spec", {}).get("renewedAt"), now)
        }
        alive.add(self.replica)
        removed = 0
        for stored in list(self.mirror.of_type(ENTRIES)):
            annotations = stored.body.get("metadata", {}).get("annotations") or {}
            controller = annotations.get(CONTROLLER)
            if controller is None:
                continue  # written by a person: static, never collected
            gone = self._lapsed(annotations.get(DISCONNECTED_AT), now) or (
                controller not in alive and self._lapsed(annotations.get(CONNECTED_AT), now)
            )
            if gone and await self._delete(stored):
                removed += 1
        return removed

    def lapsed(self, stamp: object) -> bool:
        """Whether a timestamp this registry wrote is older than the TTL."""
        return self._lapsed(stamp, self.now())

    def _lapsed(self, stamp: object, now: datetime) -> bool:
        moment = _parse_time(stamp)
        return moment is not None and (now - moment).total_seconds() > self.ttl_s

    async def renew_lease(self) -> None:
        """Say this replica is alive, and what its proxies run."""
        key = ObjectKey(LEASES, LEASE_NAMESPACE, self.replica)
        body = {
            "apiVersion": "gossamer.dev/v1alpha1",
            "kind": "ControlPlane",
            "metadata": {"name": self.replica, "namespace": LEASE_NAMESPACE},
            "spec": {
                "url": self.url,
                "renewedAt": _timestamp(self.now()),
                "proxies": self.status(),
            },
        }
        await self._put(key, body)

    async def _run(self) -> None:
        while True:
            try:
                await self.renew_lease()
                await self.collect()
            except StoreError as error:
                log.warning("registry upkeep failed (%s); retrying", error)
            await asyncio.sleep(self.ttl_s / 3)

    async def _put(self, key: ObjectKey, body: Mapping[str, Any]) -> None:
        for _ in range(5):
            try:
                current = await self.store.get(key)
            except NotFoundError:
                with contextlib.suppress(StoreError):
                    await self.store.create(key, body)
                    return
                continue
            try:
                await self.store.replace(key, body, current.version)
                return
            except (ConflictError, NotFoundError):
                continue
        raise StoreError(f"{key} kept changing while being written")

    async def _edit(
        self, key: ObjectKey, change: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> None:
        for _ in range(5):
            try:
                current = await self.store.get(key)
            except NotFoundError:
                return
            body = change(_copy(current.body))
            if body is None or body == _copy(current.body):
                return
            try:
                await self.store.replace(key, body, current.version)
                return
            except ConflictError:
                continue
            except NotFoundError:
                return

    async def _delete(self, stored: StoredObject) -> bool:
        try:
            await self.store.delete(stored.key, stored.version)
        except (ConflictError, NotFoundError):
            return False  # it changed (a reconnect) or another replica collected it
        log.info("removed %s: its proxy is gone", stored.key)
        return True


def _copy(body: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of a JSON body (stored bodies are shared and must not change)."""
    copied: dict[str, Any] = json.loads(json.dumps(body))
    copied["metadata"].pop("resourceVersion", None)
    return copied


def _healthy(ready: bool, stamp: str, message: str = "") -> dict[str, str]:
    condition = {
        "type": "Healthy",
        "status": "True" if ready else "False",
        "lastTransitionTime": stamp.split(".", maxsplit=1)[0] + "Z",
    }
    if message:
        condition["message"] = message
    return condition


def _with_health(body: dict[str, Any], ready: bool, message: str, now: datetime) -> dict[str, Any]:
    annotations = body["metadata"].setdefault("annotations", {})
    annotations.pop(DISCONNECTED_AT, None)
    fresh = _healthy(ready, _timestamp(now), message)
    current = (body.get("status") or {}).get("conditions") or [{}]
    if {**current[0], "lastTransitionTime": ""} == {**fresh, "lastTransitionTime": ""}:
        return body  # as Kubernetes does, the time changes only with the status
    body["status"] = {"conditions": [fresh]}
    return body
