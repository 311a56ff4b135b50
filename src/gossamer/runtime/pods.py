"""Each replica `up` runs, published as a `v1` Pod in the control plane, as a kubelet reports them.

A Pod object per replica (app and sidecar as its two containers) with the status Kubernetes
gives: phase, Ready conditions, each container's state, restart count and last termination,
the pod's IP and start time. So `gossamer get pods`, `get pods -l app=web`, `-o yaml` and
`describe pod NAME` work as kubectl's do, through the API, for every client of the control
plane. Pods carry the label `gossamer.dev/run-by: up`; those left from an earlier run are
removed when `up` starts, and a replica's Pod goes when the replica is stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from gossamer.runtime.plan import Replica
from gossamer.runtime.status import Phase, ProcessStatus
from gossamer.runtime.supervisor import Supervisor

log = logging.getLogger(__name__)

RUN_BY = "gossamer.dev/run-by"
"""The label of the Pods `up` publishes (a bare Pod in the manifests has none)."""
SIDECAR_CONTAINER = "istio-proxy"
"""The sidecar's container name, as Istio's injector names it."""


def pod_object(
    replica: Replica,
    app: ProcessStatus,
    sidecar: ProcessStatus | None,
    declared: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Pod a replica is, with its status now. `declared` is the container as the workload's
    template writes it (env with its references, not the values they resolve to: a Secret's
    value never lands in a Pod object), when the manifests are at hand."""
    owner: dict[str, Any] = {
        "apiVersion": "apps/v1" if replica.kind != "Job" else "batch/v1",
        "kind": replica.kind,
        "name": replica.deployment,
        "controller": True,
    }
    app_container = {**(declared or {}), "name": (declared or {}).get("name", replica.deployment)}
    app_container["command"] = list(replica.argv)
    app_container.pop("args", None)  # in `command` already, references expanded
    # The port the process is told to listen on (PORT), where the manifest names its own.
    app_container["ports"] = [{"containerPort": replica.app_port, "protocol": "TCP"}]
    containers: list[dict[str, Any]] = [app_container]
    statuses = [_container_status(str(app_container["name"]), app)]
    if sidecar is not None:
        containers.append(
            {
                "name": SIDECAR_CONTAINER,
                "ports": [
                    {"containerPort": replica.inbound_port, "name": "inbound"},
                    {"containerPort": replica.outbound_port, "name": "outbound"},
                    {"containerPort": replica.admin_port, "name": "admin"},
                ],
            }
        )
        statuses.append(_container_status(SIDECAR_CONTAINER, sidecar))
    ready = all(status["ready"] for status in statuses)
    started = _time(app.started_at) if app.started_at else None
    status: dict[str, Any] = {
        "phase": _phase(replica, app),
        "conditions": [
            {"type": "Ready", "status": str(ready)},
            {"type": "ContainersReady", "status": str(ready)},
        ],
        "hostIP": "127.0.0.1",
        "podIP": "127.0.0.1",
        "containerStatuses": statuses,
    }
    if started:
        status["startTime"] = started
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{replica.deployment}-{replica.index}",
            "namespace": replica.namespace,
            "labels": {**replica.labels, RUN_BY: "up"},
            "ownerReferences": [owner],
        },
        "spec": {
            "serviceAccountName": replica.service_account,
            "nodeName": socket.gethostname(),
            "restartPolicy": replica.restart,
            "containers": containers,
        },
        "status": status,
    }


def _phase(replica: Replica, app: ProcessStatus) -> str:
    if app.phase is Phase.STOPPED and app.last_exit is not None:
        return "Succeeded" if app.last_exit.succeeded and replica.kind == "Job" else "Failed"
    if app.phase is Phase.FAILED:
        return "Failed"
    if app.phase in (Phase.RUNNING, Phase.BACKOFF):
        return "Running"
    return "Pending"


def _container_status(name: str, process: ProcessStatus) -> dict[str, Any]:
    state: dict[str, Any]
    if process.phase is Phase.RUNNING and process.started_at:
        state = {"running": {"startedAt": _time(process.started_at)}}
    elif process.phase is Phase.BACKOFF:
        state = {"waiting": {"reason": "CrashLoopBackOff", "message": process.reason}}
    elif process.phase in (Phase.STOPPED, Phase.FAILED) and process.last_exit is not None:
        exit_status = process.last_exit
        code = exit_status.code if exit_status.code is not None else 128 + (exit_status.signal or 0)
        reason = "Completed" if exit_status.succeeded else "Error"
        state = {"terminated": {"exitCode": code, "reason": reason}}
    else:
        state = {"waiting": {"reason": "ContainerCreating", "message": process.reason}}
    found: dict[str, Any] = {
        "name": name,
        "ready": process.ready,
        "restartCount": process.restarts,
        "started": process.phase is Phase.RUNNING,
        "state": state,
    }
    if process.restarts and process.last_exit is not None:
        found["lastState"] = {"terminated": {"reason": str(process.last_exit)}}
    return found


def _time(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PodPublisher:
    """Keeps the control plane's Pods as the replicas are; writes only what changed."""

    def __init__(self) -> None:
        self._written: dict[tuple[str, str], str] = {}
        self._owners: dict[tuple[str, str, str], str] = {}
        """(namespace, kind, name) of a workload to its uid, for the Pods' ownerReferences."""

    def __repr__(self) -> str:
        return f"<PodPublisher {len(self._written)} pods>"

    async def clear(self, api: httpx.AsyncClient) -> None:
        """Remove the Pods an earlier run of `up` left in the store."""
        listed = await api.get("/api/v1/pods", params={"labelSelector": f"{RUN_BY}=up"})
        listed.raise_for_status()
        for item in listed.json().get("items") or []:
            meta = item["metadata"]
            await api.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}")
        self._written.clear()

    async def publish(self, api: httpx.AsyncClient, pods: Sequence[Mapping[str, Any]]) -> None:
        """Create or replace the Pods that changed, delete those no longer run."""
        wanted = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
        for key in [key for key in self._written if key not in wanted]:
            namespace, name = key
            response = await api.delete(f"/api/v1/namespaces/{namespace}/pods/{name}")
            if response.status_code in (200, 404):
                del self._written[key]
        for key, pod in wanted.items():
            text = json.dumps(pod, sort_keys=True)
            if self._written.get(key) == text:
                continue
            if await self._put(api, key, await self._owned(api, pod)):
                self._written[key] = text

    async def _owned(self, api: httpx.AsyncClient, pod: Mapping[str, Any]) -> dict[str, Any]:
        """The Pod with its owner's uid in `ownerReferences` (without them when it has none)."""
        metadata = dict(pod["metadata"])
        owners = []
        for owner in metadata.get("ownerReferences") or []:
            key = (metadata["namespace"], owner["kind"], owner["name"])
            uid = self._owners.get(key)
            if uid is None:
                plural = {"Deployment": "deployments", "StatefulSet": "statefulsets"}
                group = owner["apiVersion"]
                path = f"/apis/{group}/namespaces/{key[0]}/{plural.get(owner['kind'], 'jobs')}"
                found = await api.get(f"{path}/{owner['name']}")
                if found.status_code != 200:
                    continue
                uid = self._owners[key] = str(found.json()["metadata"].get("uid", ""))
            if uid:
                owners.append({**owner, "uid": uid})
        metadata["ownerReferences"] = owners
        if not owners:
            del metadata["ownerReferences"]
        return {**pod, "metadata": metadata}

    async def _put(
        self, api: httpx.AsyncClient, key: tuple[str, str], pod: Mapping[str, Any]
    ) -> bool:
        namespace, name = key
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        current = await api.get(path)
        if current.status_code == 404:
            created = await api.post(f"/api/v1/namespaces/{namespace}/pods", json=pod)
            if created.status_code >= 300:
                log.warning("cannot publish pod %s: %s", name, created.text[:200])
            return created.status_code < 300
        current.raise_for_status()
        body = dict(pod)
        metadata = dict(pod["metadata"])
        kept = current.json()["metadata"]
        for field in ("resourceVersion", "creationTimestamp", "uid"):
            if field in kept:
                metadata[field] = kept[field]
        body["metadata"] = metadata
        replaced = await api.put(path, json=body)
        if replaced.status_code >= 400 and replaced.status_code != 409:
            log.warning("cannot publish pod %s: %s", name, replaced.text[:200])
        return replaced.status_code < 300


def declared_containers(
    documents: Sequence[Mapping[str, Any]],
) -> dict[tuple[str, str], Mapping[str, Any]]:
    """The first container of each workload's pod template in the manifests, by (namespace,
    workload name): the one `up` runs."""
    found: dict[tuple[str, str], Mapping[str, Any]] = {}
    for document in documents:
        if document.get("kind") not in ("Deployment", "StatefulSet", "Job"):
            continue
        metadata = document.get("metadata") or {}
        template = ((document.get("spec") or {}).get("template") or {}).get("spec") or {}
        containers = template.get("containers") or []
        if containers and isinstance(containers[0], Mapping):
            key = (str(metadata.get("namespace") or "default"), str(metadata.get("name")))
            found[key] = containers[0]
    return found


async def keep_published(
    publisher: PodPublisher,
    api: Callable[[], httpx.AsyncClient],
    replicas: Callable[[], Sequence[tuple[Replica, Supervisor]]],
    declared: Mapping[tuple[str, str], Mapping[str, Any]],
    interval_s: float = 1.0,
) -> None:
    """Publish the replicas' Pods every `interval_s` (what changed only) until cancelled."""
    async with api() as client:
        cleared = False
        while True:
            try:
                if not cleared:
                    await publisher.clear(client)
                    cleared = True
                pods = []
                for replica, supervisor in replicas():
                    app = supervisor.status(replica.name)
                    sidecar = supervisor.status(f"{replica.name}.sidecar")
                    container = declared.get((replica.namespace, replica.deployment))
                    pods.append(pod_object(replica, app, sidecar, container))
                await publisher.publish(client, pods)
            except httpx.HTTPError as error:
                log.warning("cannot publish the pods: %s", error)
            await asyncio.sleep(interval_s)
