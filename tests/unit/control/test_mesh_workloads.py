"""The workload index: a sidecar's own part from the few resources it finds is the part that
every resource of the mesh gives, for each workload of a mesh with tricky selectors."""

from __future__ import annotations

import pytest

from gossamer.control.mesh.views import sidecar_part
from gossamer.control.mesh.workloads import WorkloadIndex
from gossamer.snapshot.translate import SidecarSpec

from .test_mesh_views import resources

MESH = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1}
spec:
  selector: {matchLabels: {app: reviews, version: v1}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec:
      containers:
      - {name: app, command: [run], ports: [{name: web, containerPort: 9081}, {containerPort: 15}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, namespace: other}
spec:
  selector: {matchLabels: {app: reviews}}
  template:
    metadata: {labels: {app: reviews}}
    spec: {containers: [{name: app, command: [run], ports: [{containerPort: 7000}]}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: lonely}
spec:
  selector: {matchLabels: {app: lonely}}
  template:
    metadata: {labels: {app: lonely}}
    spec: {containers: [{name: app, command: [run]}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080, targetPort: web}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews-v1}
spec: {selector: {app: reviews, version: v1}, ports: [{name: http-admin, port: 9090}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews-v2}
spec: {selector: {app: reviews, version: v2}, ports: [{name: http, port: 9091}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: other}
spec: {selector: {app: reviews}, ports: [{name: http, port: 80, targetPort: 7000}]}
---
apiVersion: v1
kind: Service
metadata:
  name: hidden
  annotations: {networking.istio.io/exportTo: elsewhere}
spec: {selector: {app: reviews}, ports: [{name: http, port: 7070}]}
---
apiVersion: v1
kind: Service
metadata: {name: headless}
spec: {ports: [{name: http, port: 8080}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm-reviews}
spec:
  hosts: [vm.reviews.internal]
  ports: [{number: 9092, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: reviews}}
"""

WORKLOADS = [
    ("default", "reviews-v1", {"app": "reviews", "version": "v1"}),
    ("other", "reviews-v1", {"app": "reviews"}),
    ("default", "lonely", {"app": "lonely"}),
    ("default", "nobody", {}),
]


@pytest.mark.parametrize(("namespace", "workload", "labels"), WORKLOADS)
def test_the_own_part_from_the_index_is_the_own_part_from_every_resource(
    namespace: str, workload: str, labels: dict[str, str]
) -> None:
    everything = resources(MESH)
    index = WorkloadIndex(everything)
    spec = SidecarSpec(workload=workload, namespace=namespace, service_account="default")
    found = index.own_resources(namespace, workload, labels)
    assert sidecar_part(found, spec, labels) == sidecar_part(everything, spec, labels)
    assert len(found) < len(everything)


def test_services_are_found_by_their_whole_selector() -> None:
    index = WorkloadIndex(resources(MESH))
    v1 = index.selecting("default", {"app": "reviews", "version": "v1"})
    assert [s.name for s in v1] == ["reviews", "reviews-v1", "hidden"]
    assert [s.name for s in index.selecting("default", {"app": "reviews"})] == ["reviews", "hidden"]
    assert [s.name for s in index.selecting("other", {"app": "reviews"})] == ["reviews"]
    assert index.selecting("default", {}) == []
    deployment = index.deployment("other", "reviews-v1")
    assert deployment is not None and deployment.namespace == "other"
    assert index.deployment("default", "nobody") is None


def test_a_workloads_inbound_ports_come_from_every_service_and_entry_selecting_it() -> None:
    index = WorkloadIndex(resources(MESH))
    labels = {"app": "reviews", "version": "v1"}
    spec = SidecarSpec(workload="reviews-v1", namespace="default", service_account="default")
    part = sidecar_part(index.own_resources("default", "reviews-v1", labels), spec, labels)
    # Not 7070: that Service is exported elsewhere only; not 9091: it selects version v2.
    assert sorted(part.clusters) == ["inbound|9080||", "inbound|9090||", "inbound|9092||"]
