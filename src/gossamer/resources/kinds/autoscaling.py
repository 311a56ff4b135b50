"""Kubernetes `autoscaling/v2` (and `v1`) HorizontalPodAutoscaler.

`gossamer up` runs a small controller for it (runtime/autoscaler.py): it scales a Deployment
between `minReplicas` and `maxReplicas` on CPU or memory of the app processes, or on requests
per second served by each replica's sidecar (a `Pods` metric named `requests_per_second`).
Every field of the Kubernetes spec loads; those the controller does not act on (`Object` and
`External` metrics, a target other than a Deployment) are named by `validate --strict`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from pydantic import Field

from gossamer.resources.base import (
    Finding,
    IntOrString,
    Model,
    NonNegative,
    Opaque,
    Positive,
    Resource,
)
from gossamer.resources.problems import Severity

REQUESTS_PER_SECOND = "requests_per_second"
"""The `Pods` metric the sidecars provide: requests per second each replica served."""
POD_METRICS = frozenset({REQUESTS_PER_SECOND, "istio_requests_per_second"})


class CrossVersionObjectReference(Model):
    """The workload scaled."""

    kind: str
    name: str
    api_version: str | None = None


class MetricTarget(Model):
    """What the metric should be: a value, an average per pod, or a share of the requests."""

    type: Literal["Utilization", "Value", "AverageValue"]
    value: IntOrString | None = None
    average_value: IntOrString | None = None
    average_utilization: Positive | None = None


class ResourceMetricSource(Model):
    """CPU or memory of the pods."""

    name: str
    target: MetricTarget


class ContainerResourceMetricSource(Model):
    """CPU or memory of one container of the pods."""

    name: str
    container: str
    target: MetricTarget


class MetricIdentifier(Model):
    """A metric by name (and label selector)."""

    name: str
    selector: Opaque = None


class PodsMetricSource(Model):
    """A metric each pod reports, averaged over the pods."""

    metric: MetricIdentifier
    target: MetricTarget


class ObjectMetricSource(Model):
    """A metric of another object (an Ingress's requests, say)."""

    described_object: CrossVersionObjectReference
    metric: MetricIdentifier
    target: MetricTarget


class ExternalMetricSource(Model):
    """A metric from outside the cluster."""

    metric: MetricIdentifier
    target: MetricTarget


class MetricSpec(Model):
    """One metric to scale on."""

    type: Literal["Resource", "ContainerResource", "Pods", "Object", "External"]
    resource: ResourceMetricSource | None = None
    container_resource: ContainerResourceMetricSource | None = None
    pods: PodsMetricSource | None = None
    object: ObjectMetricSource | None = None
    external: ExternalMetricSource | None = None


class HPAScalingPolicy(Model):
    """At most `value` pods (or percent of them) per `periodSeconds`."""

    type: Literal["Pods", "Percent"]
    value: Positive
    period_seconds: Positive


class HPAScalingRules(Model):
    """How fast one direction may go."""

    stabilization_window_seconds: NonNegative | None = None
    select_policy: Literal["Max", "Min", "Disabled"] | None = None
    policies: list[HPAScalingPolicy] | None = None
    tolerance: IntOrString | None = None


class HorizontalPodAutoscalerBehavior(Model):
    """Scale-up and scale-down rules (Kubernetes' defaults when absent)."""

    scale_up: HPAScalingRules | None = None
    scale_down: HPAScalingRules | None = None


class HorizontalPodAutoscalerSpec(Model):
    """Every field of autoscaling/v2's spec, and v1's CPU target."""

    scale_target_ref: CrossVersionObjectReference
    max_replicas: Positive
    min_replicas: Positive | None = None
    metrics: list[MetricSpec] = Field(default_factory=list)
    behavior: HorizontalPodAutoscalerBehavior | None = None
    target_cpu_utilization_percentage: Positive | None = Field(
        default=None, alias="targetCPUUtilizationPercentage"
    )
    """autoscaling/v1's only metric."""


class HorizontalPodAutoscaler(Resource):
    """`autoscaling/v2` HorizontalPodAutoscaler (v1 too): replicas follow the load."""

    GROUP: ClassVar[str] = "autoscaling"
    KIND: ClassVar[str] = "HorizontalPodAutoscaler"
    PLURAL: ClassVar[str] = "horizontalpodautoscalers"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v2", "v1")

    spec: HorizontalPodAutoscalerSpec

    @property
    def min_replicas(self) -> int:
        """Kubernetes' default is 1."""
        return self.spec.min_replicas or 1

    def check(self) -> Iterator[Finding]:
        """Bounds in order, each metric with its source, targets the controller can read."""
        spec = self.spec
        if self.min_replicas > spec.max_replicas:
            yield Finding(
                ("spec", "minReplicas"),
                f"minReplicas ({self.min_replicas}) is above maxReplicas ({spec.max_replicas})",
            )
        if spec.scale_target_ref.kind != "Deployment":
            yield Finding(
                ("spec", "scaleTargetRef", "kind"),
                f"only Deployments are scaled; this {spec.scale_target_ref.kind} keeps its "
                "replicas",
                Severity.WARNING,
            )
        for index, metric in enumerate(spec.metrics):
            yield from _check_metric(metric, ("spec", "metrics", index))


_SOURCE_FIELD = {
    "Resource": "resource",
    "ContainerResource": "containerResource",
    "Pods": "pods",
    "Object": "object",
    "External": "external",
}


def _check_metric(metric: MetricSpec, at: tuple[str | int, ...]) -> Iterator[Finding]:
    field = _SOURCE_FIELD[metric.type]
    source = getattr(metric, "container_resource" if field == "containerResource" else field)
    if source is None:
        yield Finding((*at, field), f"a {metric.type} metric needs its `{field}`")
        return
    if metric.type in ("Object", "External"):
        yield Finding(
            (*at, "type"),
            f"{metric.type} metrics are not read: only Resource (cpu, memory), "
            f"ContainerResource and Pods ({REQUESTS_PER_SECOND}) metrics scale",
            Severity.WARNING,
        )
        return
    if isinstance(source, ResourceMetricSource | ContainerResourceMetricSource):
        if source.name not in ("cpu", "memory"):
            yield Finding((*at, field, "name"), f"no resource {source.name!r}: cpu or memory")
        target = source.target
        if target.type == "Utilization" and target.average_utilization is None:
            yield Finding((*at, field, "target"), "a Utilization target needs averageUtilization")
        elif target.type == "AverageValue" and target.average_value is None:
            yield Finding((*at, field, "target"), "an AverageValue target needs averageValue")
        elif target.type == "Value":
            yield Finding((*at, field, "target", "type"), "a resource target is per pod")
        return
    assert isinstance(source, PodsMetricSource)
    if source.metric.name not in POD_METRICS:
        yield Finding(
            (*at, "pods", "metric", "name"),
            f"no pod metric {source.metric.name!r}: the sidecars provide {REQUESTS_PER_SECOND}",
        )
    if source.target.type != "AverageValue" or source.target.average_value is None:
        yield Finding((*at, "pods", "target"), "a Pods target is an AverageValue")
