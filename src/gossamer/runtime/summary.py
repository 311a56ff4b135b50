"""What `status.json` says of the mesh's processes, services and Jobs (`gossamer status`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gossamer.runtime.plan import Replica
from gossamer.runtime.status import Phase, ProcessStatus
from gossamer.runtime.supervisor import Supervisor


def status_row(status: ProcessStatus, kind: str) -> dict[str, Any]:
    """One process as `status.json` keeps it."""
    return {
        "name": status.name,
        "kind": kind,
        "phase": status.phase.value,
        "ready": status.ready,
        "pid": status.pid,
        "restarts": status.restarts,
        "lastExit": str(status.last_exit) if status.last_exit else "",
        "reason": status.reason or "",
    }


def services_summary(
    replicas: Mapping[str, tuple[Replica, Supervisor]],
    ready: set[str],
    rates: Mapping[str, float],
) -> list[dict[str, Any]]:
    """Each service: its replicas, how many are ready (of the `ready` process names), and
    requests per second."""
    services: dict[str, dict[str, Any]] = {}
    for name, (replica, _) in sorted(replicas.items()):
        if replica.kind == "Job":
            continue
        service = replica.labels.get("app", replica.deployment)
        row = services.setdefault(service, {"name": service, "replicas": 0, "ready": 0})
        row["replicas"] += 1
        row["ready"] += name in ready
    for service, row in services.items():
        row["rps"] = round(rates.get(service, 0.0), 1)
    return list(services.values())


def jobs_summary(replicas: Mapping[str, tuple[Replica, Supervisor]]) -> list[dict[str, Any]]:
    """Each Job as `kubectl get jobs` shows it: completions, succeeded, failed, its state."""
    jobs: dict[tuple[str, str], dict[str, Any]] = {}
    for replica, supervisor in replicas.values():
        if replica.kind != "Job":
            continue
        row = jobs.setdefault(
            (replica.namespace, replica.deployment),
            {
                "name": replica.deployment,
                "namespace": replica.namespace,
                "completions": 0,
                "succeeded": 0,
                "failed": 0,
                "active": 0,
            },
        )
        row["completions"] += 1
        app = supervisor.status(replica.name)
        if app.phase is Phase.STOPPED and app.last_exit is not None and app.last_exit.succeeded:
            row["succeeded"] += 1
        elif app.phase is Phase.FAILED:
            row["failed"] += 1
        else:
            row["active"] += 1
    for row in jobs.values():
        row["status"] = (
            "Complete"
            if row["succeeded"] == row["completions"]
            else "Failed"
            if row["failed"]
            else "Running"
        )
    return [jobs[key] for key in sorted(jobs)]
