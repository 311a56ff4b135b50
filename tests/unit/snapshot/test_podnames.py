"""Each StatefulSet replica is a Service of its own under its governing Service, with DNS."""

from __future__ import annotations

import dns.name

from gossamer.discovery.resolver import DnsConfig, Lookup, parse_name
from gossamer.resources import Resource, load_text
from gossamer.snapshot.endpoints import endpoint_index
from gossamer.snapshot.vips import assign_vips, services_of

MANIFESTS = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: w, command: [serve]}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web-1-entry}
spec:
  address: 127.0.0.1
  labels: {app: web, statefulset.kubernetes.io/pod-name: web-1}
  ports: {http: 31001}
"""


def _resources() -> list[Resource]:
    loaded = load_text(MANIFESTS, "m.yaml")
    assert [str(p) for p in loaded.problems] == []
    return [r.resource for r in loaded.resources]


def test_each_replica_has_a_service_a_vip_and_only_its_own_endpoint() -> None:
    resources = _resources()
    names = [s.name for s in services_of(resources)]
    assert names == ["web", "web-0.web", "web-1.web"]
    vips = assign_vips(services_of(resources))
    assert ("default", "web") not in vips  # headless
    assert {("default", "web-0.web"), ("default", "web-1.web")} <= set(vips)
    index = endpoint_index(resources)
    assert [e.port for e in index[("web-1.web.default.svc.cluster.local", 80)]] == [31001]
    assert ("web-0.web.default.svc.cluster.local", 80) not in index


def test_dns_reads_pod_service_namespace_names() -> None:
    name = dns.name.from_text("web-0.web.default.svc.cluster.local.")
    assert parse_name(name, DnsConfig(), frozenset()) == Lookup("web-0.web", "default")
