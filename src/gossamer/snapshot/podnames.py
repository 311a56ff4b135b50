"""A name of its own for each StatefulSet replica: `web-0.nginx.default.svc.cluster.local`.

Kubernetes gives each pod of a StatefulSet a DNS name under the Service its `serviceName` names.
Here each such pod is a Service of its own, derived from that one (its ports; its selector plus
the pod's `statefulset.kubernetes.io/pod-name` label, which the replica's sidecar registers
with), named `POD.SERVICE`: it gets a virtual IP, DNS answers and a cluster with that one
replica's endpoint like any other Service, computed by every process from the same resources.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from gossamer.resources import Resource
from gossamer.resources.kinds.apps import POD_NAME_LABEL, StatefulSet
from gossamer.resources.kinds.core import Service


def stateful_pod_services(resources: Iterable[Resource]) -> Iterator[Service]:
    """A Service for each replica of each StatefulSet whose serviceName names a Service."""
    listed = list(resources)
    services = {
        (r.namespace, r.name): r
        for r in listed
        if isinstance(r, Service) and r.spec.selector and r.spec.type != "ExternalName"
    }
    for resource in listed:
        if not isinstance(resource, StatefulSet) or not resource.spec.service_name:
            continue
        governing = services.get((resource.namespace, resource.spec.service_name))
        if governing is None:
            continue
        for index in range(resource.spec.replicas):
            yield pod_service(governing, f"{resource.name}-{index}")


def pod_service(governing: Service, pod: str) -> Service:
    """The Service that stands for one pod under its governing Service."""
    selector = {**(governing.spec.selector or {}), POD_NAME_LABEL: pod}
    return governing.model_copy(
        update={
            "metadata": governing.metadata.model_copy(update={"name": f"{pod}.{governing.name}"}),
            "spec": governing.spec.model_copy(
                update={"selector": selector, "cluster_ip": None, "cluster_ips": []}
            ),
        }
    )
