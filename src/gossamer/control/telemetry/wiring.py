"""What the telemetry reads of the mesh: its proxies to scrape, and its inventory."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from gossamer.control.mesh.service import Mesh
from gossamer.control.store import ResourceType
from gossamer.control.telemetry.scraper import ScrapeTarget
from gossamer.control.telemetry.service import Inventory

DEPLOYMENTS = ResourceType("apps", "deployments")


def scrape_targets(mesh: Mesh) -> Callable[[], Iterable[ScrapeTarget]]:
    """Every proxy connected to this replica that announced its admin endpoint."""

    def targets() -> Iterable[ScrapeTarget]:
        for stream in list(mesh.distributor.streams.values()):
            hello = stream.hello
            if hello.admin:
                yield ScrapeTarget(hello.name or stream.id, hello.admin, hello.ready)

    return targets


def mesh_inventory(mesh: Mesh) -> Inventory:
    """Sidecars connected here and Deployment replicas, per `WORKLOAD.NAMESPACE`."""
    proxies: dict[str, int] = {}
    for stream in list(mesh.distributor.streams.values()):
        if stream.hello.role == "sidecar":
            name = f"{stream.hello.workload}.{stream.hello.namespace}"
            proxies[name] = proxies.get(name, 0) + 1
    replicas: dict[str, int] = {}
    for stored in mesh.mirror.of_type(DEPLOYMENTS):
        spec = stored.body.get("spec")
        count = spec.get("replicas", 1) if isinstance(spec, dict) else 1
        replicas[f"{stored.key.name}.{stored.key.namespace}"] = (
            count if isinstance(count, int) else 1
        )
    return Inventory(proxies, replicas)
