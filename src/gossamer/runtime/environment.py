"""What an app process is told by `gossamer up`: its port, its sidecar, who it is, its data.

Also Kubernetes' `$(VAR)` references in a container's command and args, expanded from the same
environment, so that `--listen 127.0.0.1:$(PORT)` works in a manifest as it would in a pod.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from gossamer import tracehook
from gossamer.resources.podconfig import expand
from gossamer.runtime.plan import MeshPlan, Replica


def app_environment(replica: Replica, workdir: Path, data: Path) -> dict[str, str]:
    """Where to listen, the sidecar as HTTP proxy, who the app is, and its data folder."""
    proxy = f"http://127.0.0.1:{replica.outbound_port}"
    local = "127.0.0.1,localhost,::1"
    # The trace hook's folder comes first: its sitecustomize must run, and runs the next one.
    hook = tracehook.STARTUP_FOLDER if tracehook.enabled(replica.env) else None
    python_path = os.pathsep.join(
        p for p in (hook, str(workdir), os.environ.get("PYTHONPATH")) if p
    )
    return {
        **replica.env,
        "PORT": str(replica.app_port),
        "HTTP_PROXY": proxy,
        "http_proxy": proxy,
        "NO_PROXY": local,
        "no_proxy": local,
        "GOSSAMER_WORKLOAD": replica.deployment,
        "GOSSAMER_SERVICE": replica.service,
        "GOSSAMER_NAMESPACE": replica.namespace,
        "GOSSAMER_IDENTITY": replica.identity,
        "GOSSAMER_REPLICA": replica.name,
        # As in a pod: its name (a StatefulSet's `web-0` tells the replica its ordinal).
        "HOSTNAME": replica.pod,
        "GOSSAMER_DATA": str(data_folder(data, replica)),
        "PYTHONPATH": python_path,
        "PYTHONUNBUFFERED": "1",
    }


def data_folder(data: Path, replica: Replica) -> Path:
    """`DATA/NAMESPACE/SERVICE`: kept across restarts, shared by the replicas and versions of
    one service (as a volume they all mount would be)."""
    return data / replica.namespace / replica.service


def dns_environment(plan: MeshPlan) -> dict[str, str]:
    """Where the mesh DNS is, for apps that resolve names through it."""
    return {"GOSSAMER_DNS": f"127.0.0.1:{plan.dns_port}"}


def expand_references(argv: Sequence[str], env: Mapping[str, str]) -> tuple[str, ...]:
    """Kubernetes' `$(NAME)` references in command and args (podconfig.expand)."""
    return tuple(expand(argument, env) for argument in argv)
