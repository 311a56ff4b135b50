"""HorizontalPodAutoscaler manifests: what the controller can read loads cleanly, the rest is
named at its line."""

from __future__ import annotations

from gossamer.resources import load_text
from gossamer.resources.problems import Severity

HEAD = """\
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: KIND, name: web}
"""


def problems(text: str) -> list[tuple[Severity, int | None, str]]:
    return [(p.severity, p.line, p.message) for p in load_text(text, "hpa.yaml").problems]


def test_requests_per_second_and_cpu_load_cleanly() -> None:
    text = (
        HEAD.replace("KIND", "Deployment")
        + """\
  minReplicas: 2
  maxReplicas: 6
  metrics:
    - type: Pods
      pods: {metric: {name: requests_per_second}, target: {type: AverageValue, averageValue: 50}}
    - type: Resource
      resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 60
      policies: [{type: Pods, value: 1, periodSeconds: 30}]
"""
    )
    assert problems(text) == []


def test_bounds_out_of_order_and_targets_without_values_are_errors() -> None:
    text = (
        HEAD.replace("KIND", "Deployment")
        + """\
  minReplicas: 5
  maxReplicas: 2
  metrics:
    - type: Resource
      resource: {name: cpu, target: {type: Utilization}}
    - type: Pods
      pods: {metric: {name: queue_depth}, target: {type: AverageValue, averageValue: 3}}
"""
    )
    found = problems(text)
    assert all(severity is Severity.ERROR for severity, _, _ in found), found
    messages = " | ".join(message for _, _, message in found)
    assert "minReplicas (5) is above maxReplicas (2)" in messages
    assert "needs averageUtilization" in messages
    assert "no pod metric 'queue_depth'" in messages


def test_what_is_not_scaled_is_a_warning_at_its_line() -> None:
    text = (
        HEAD.replace("KIND", "StatefulSet")
        + """\
  maxReplicas: 3
  metrics:
    - type: External
      external: {metric: {name: queue}, target: {type: Value, value: 3}}
"""
    )
    found = problems(text)
    assert [(severity, line) for severity, line, _ in found] == [
        (Severity.WARNING, 5),
        (Severity.WARNING, 8),
    ], found
    assert "only Deployments are scaled" in found[0][2]
    assert "External metrics are not read" in found[1][2]
