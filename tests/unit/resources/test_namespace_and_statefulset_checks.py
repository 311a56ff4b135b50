"""Two references Kubernetes would refuse or leave dangling, named where they are written: an
object in a namespace the files do not declare (when they declare some), and a StatefulSet
whose serviceName names no Service."""

from __future__ import annotations

from gossamer.resources import load_text
from gossamer.resources.analysis import analyze
from gossamer.resources.problems import Severity

FILES = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: a, namespace: shop}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: b, namespace: shp}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c, namespace: istio-system}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web, namespace: shop}
spec:
  serviceName: web
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, command: [python, -m, web]}]
"""


def test_an_undeclared_namespace_and_a_missing_governing_service_are_warnings_at_their_lines() -> (
    None
):
    loaded = load_text(FILES, "shop.yaml")
    assert loaded.problems == []
    found = [(p.severity, p.line, p.message) for p in analyze(loaded.resources)]
    assert found == [
        (
            Severity.WARNING,
            11,
            "no Namespace shp in the files, which declare shop; Kubernetes would refuse the object",
        ),
        (
            Severity.WARNING,
            21,
            "no Service web in namespace shop: the replicas get no DNS names of their own",
        ),
    ]


def test_files_that_declare_no_namespace_leave_namespaces_to_the_cluster() -> None:
    text = FILES.split("---\n", 1)[1]
    text += """---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: None, selector: {app: web}, ports: [{port: 80}]}
"""
    loaded = load_text(text, "shop.yaml")
    assert [p.message for p in analyze(loaded.resources)] == []
