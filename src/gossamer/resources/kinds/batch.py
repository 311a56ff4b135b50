"""Kubernetes `batch/v1` Job, run to completion as local processes, and CronJob (kept)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from gossamer.resources.base import Finding, Model, NonNegative, Opaque, Positive, Resource
from gossamer.resources.kinds.apps import LabelSelector, PodTemplateSpec, Workload


class JobSpec(Model):
    """Every field of the Kubernetes JobSpec."""

    template: PodTemplateSpec
    completions: NonNegative | None = None
    parallelism: NonNegative | None = None
    backoff_limit: NonNegative | None = None
    active_deadline_seconds: Positive | None = None
    ttl_seconds_after_finished: NonNegative | None = None
    completion_mode: Literal["NonIndexed", "Indexed"] | None = None
    suspend: bool | None = None
    selector: LabelSelector | None = None
    manual_selector: bool | None = None
    pod_failure_policy: Opaque = None
    success_policy: Opaque = None
    backoff_limit_per_index: NonNegative | None = None
    max_failed_indexes: NonNegative | None = None
    pod_replacement_policy: Literal["TerminatingOrFailed", "Failed"] | None = None
    managed_by: str | None = None


class Job(Workload):
    """`batch/v1` Job: its pods run until they succeed, retried per its restartPolicy."""

    GROUP: ClassVar[str] = "batch"
    KIND: ClassVar[str] = "Job"
    PLURAL: ClassVar[str] = "jobs"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    spec: JobSpec

    @property
    def template(self) -> PodTemplateSpec:
        """The pods it makes."""
        return self.spec.template

    @property
    def completions(self) -> int:
        """How many pods must succeed (Kubernetes' default: one)."""
        return 1 if self.spec.completions is None else self.spec.completions

    @property
    def backoff_limit(self) -> int:
        """How many failed runs end the Job as failed (Kubernetes' default: six)."""
        return 6 if self.spec.backoff_limit is None else self.spec.backoff_limit

    def check(self) -> Iterator[Finding]:
        """A Job's pods end: restartPolicy OnFailure or Never, as the API server demands."""
        yield from super().check()
        if self.spec.template.spec.restart_policy == "Always":
            yield Finding(
                ("spec", "template", "spec", "restartPolicy"),
                "a Job's pods must set restartPolicy OnFailure or Never (Always never completes)",
            )


class CronJob(Resource):
    """`batch/v1` CronJob: a Job on a schedule; kept, not run."""

    GROUP: ClassVar[str] = "batch"
    KIND: ClassVar[str] = "CronJob"
    PLURAL: ClassVar[str] = "cronjobs"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    spec: Opaque = None
