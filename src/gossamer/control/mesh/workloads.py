"""What one workload's own part reads, found by lookup instead of a walk over the whole mesh.

A sidecar's own part (node, listeners, inbound routes) depends on its Deployment, the Services
of its namespace that select its pods, and ServiceEntries (which may select workloads too).
Building it from every resource made each proxy's hello cost as much as the mesh is large, so
joining N proxies cost N squared. The index is built once per change of those kinds and hands
each hello only the resources its part can read, in the order the store gave them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from gossamer.resources import Resource
from gossamer.resources.kinds.apps import Workload
from gossamer.resources.kinds.core import Service
from gossamer.resources.kinds.istio_networking import ServiceEntry


class WorkloadIndex:
    """Deployments by name, Services by the label pairs of their selectors."""

    __slots__ = ("_deployments", "_entries", "_services")

    def __init__(self, resources: Sequence[Resource]) -> None:
        self._deployments: dict[tuple[str, str], tuple[int, Workload]] = {}
        self._services: defaultdict[tuple[str, str, str], list[tuple[int, Service]]] = defaultdict(
            list
        )
        self._entries: list[tuple[int, Resource]] = []
        for position, resource in enumerate(resources):
            if isinstance(resource, Workload):
                self._deployments[resource.namespace, resource.name] = (position, resource)
            elif isinstance(resource, Service) and resource.spec.selector:
                # One pair of the selector is enough to find it; the rest is checked on lookup.
                key, value = min(resource.spec.selector.items())
                self._services[resource.namespace, key, value].append((position, resource))
            elif isinstance(resource, ServiceEntry):
                self._entries.append((position, resource))

    def __repr__(self) -> str:
        return (
            f"<WorkloadIndex {len(self._deployments)} deployments, "
            f"{sum(map(len, self._services.values()))} selecting services>"
        )

    def deployment(self, namespace: str, name: str) -> Workload | None:
        """The Deployment (or StatefulSet, or Job) of a workload, if there is one."""
        found = self._deployments.get((namespace, name))
        return found[1] if found else None

    def selecting(self, namespace: str, labels: Mapping[str, str]) -> list[Service]:
        """The Services of `namespace` whose selector picks pods with these labels."""
        return [service for _, service in self._selecting(namespace, labels)]

    def own_resources(
        self, namespace: str, workload: str, labels: Mapping[str, str]
    ) -> list[Resource]:
        """Every resource a sidecar's own part of this workload can read, in store order."""
        found: list[tuple[int, Resource]] = [*self._selecting(namespace, labels), *self._entries]
        deployment = self._deployments.get((namespace, workload))
        if deployment is not None:
            found.append(deployment)
        return [resource for _, resource in sorted(found, key=lambda pair: pair[0])]

    def _selecting(self, namespace: str, labels: Mapping[str, str]) -> list[tuple[int, Service]]:
        found: dict[int, Service] = {}
        for key, value in labels.items():
            for position, service in self._services.get((namespace, key, value), ()):
                selector = service.spec.selector or {}
                if all(labels.get(k) == v for k, v in selector.items()):
                    found[position] = service
        return sorted(found.items())
