"""A HorizontalPodAutoscaler controller for `gossamer up`: Deployments follow their load.

Every `sync_s` (15 s, Kubernetes' `--horizontal-pod-autoscaler-sync-period`; `up
--hpa-sync-period` changes it) the controller reads every HorizontalPodAutoscaler from the
control plane and, for each one whose target is a Deployment:

1. measures its ready replicas: CPU (cores, from /proc, the app's whole process group) and
   memory (resident bytes) of the app, and requests per second its sidecar served (the
   `requests_per_second` Pods metric);
2. turns each metric into a replica count (scaling.py: Kubernetes' rules, tolerance,
   stabilization windows and rate policies), and takes the largest;
3. writes the Deployment's `spec.replicas` when that changes it (the runtime starts or stops
   replicas as for `gossamer apply`), and the autoscaler's `status` (current and desired
   replicas, the metrics read, conditions), which `gossamer get hpa` shows.

A `Utilization` target is a share of the containers' `resources.requests`: without a request
the metric is not read, and the status says so (as Kubernetes does).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pydantic

from gossamer.resources.kinds.autoscaling import (
    POD_METRICS,
    HorizontalPodAutoscaler,
    MetricSpec,
    MetricTarget,
)
from gossamer.runtime.scaling import (
    DOWN_DEFAULT,
    UP_DEFAULT,
    Recommender,
    proposal,
    quantity,
    rules_from,
)

log = logging.getLogger(__name__)

SYNC_S = 15.0
DEFAULT_CPU_UTILIZATION = 80
"""The target when an autoscaler names no metric (Kubernetes' default)."""
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class Pod:
    """One replica as the controller sees it."""

    name: str
    pid: int | None
    ready: bool
    requests_per_second: float


PodsOf = Callable[[str, str], Sequence[Pod]]
"""The replicas of (namespace, deployment)."""


@dataclass
class _Sample:
    ticks: int
    at: float


@dataclass
class _Reading:
    """What one metric read: per-replica values, the target per replica, and the status entry."""

    values: list[float]
    target: float
    status: dict[str, Any]


@dataclass
class Autoscaler:
    """The controller; `run` until cancelled."""

    api: Callable[[], httpx.AsyncClient]
    pods_of: PodsOf
    sync_s: float = SYNC_S
    proc: Path = Path("/proc")
    _memory: dict[tuple[str, str], Recommender] = field(default_factory=dict)
    _cpu: dict[int, _Sample] = field(default_factory=dict)

    async def run(self) -> None:
        """Reconcile every `sync_s` until cancelled."""
        async with self.api() as api:
            while True:
                await asyncio.sleep(self.sync_s)
                try:
                    await self.reconcile(api, time.monotonic())
                except httpx.HTTPError as error:
                    log.warning("autoscaling: cannot reach the control plane: %s", error)

    async def reconcile(self, api: httpx.AsyncClient, now: float) -> None:
        """One pass over every autoscaler."""
        response = await api.get("/apis/autoscaling/v2/horizontalpodautoscalers")
        response.raise_for_status()
        seen = set()
        for item in response.json().get("items") or []:
            try:
                hpa = HorizontalPodAutoscaler.model_validate(item)
            except pydantic.ValidationError as error:
                log.warning("autoscaling: %s is not valid: %s", item.get("metadata"), error)
                continue
            seen.add((hpa.namespace, hpa.name))
            if hpa.spec.scale_target_ref.kind == "Deployment":
                await self._one(api, hpa, now)
        for key in set(self._memory) - seen:
            del self._memory[key]

    async def _one(self, api: httpx.AsyncClient, hpa: HorizontalPodAutoscaler, now: float) -> None:
        target = hpa.spec.scale_target_ref.name
        path = f"/apis/apps/v1/namespaces/{hpa.namespace}/deployments/{target}"
        found = await api.get(path)
        if found.status_code == 404:
            await self._status(
                api,
                hpa,
                current=0,
                desired=0,
                metrics=[],
                reason="FailedGetScale",
                message=f"no Deployment {target}",
            )
            return
        found.raise_for_status()
        deployment = found.json()
        current = int(deployment.get("spec", {}).get("replicas", 1))
        if current == 0:
            # As Kubernetes: a Deployment scaled to zero by hand is left alone.
            await self._status(
                api,
                hpa,
                current=0,
                desired=0,
                metrics=[],
                reason="ScalingDisabled",
                message="scaled to zero",
            )
            return
        pods = [pod for pod in self.pods_of(hpa.namespace, target) if pod.ready]
        requests = _requests(deployment)
        readings: list[_Reading] = []
        problems: list[str] = []
        for metric in _metrics(hpa):
            reading = self._read(metric, pods, requests, now)
            if isinstance(reading, str):
                problems.append(reading)
            elif reading is not None:
                readings.append(reading)
        proposed = max((proposal(current, r.values, r.target) for r in readings), default=current)
        recommender = self._memory.setdefault(
            (hpa.namespace, hpa.name),
            Recommender(
                rules_from(hpa.spec.behavior.scale_up if hpa.spec.behavior else None, UP_DEFAULT),
                rules_from(
                    hpa.spec.behavior.scale_down if hpa.spec.behavior else None, DOWN_DEFAULT
                ),
            ),
        )
        wanted = recommender.decide(now, current, proposed, hpa.min_replicas, hpa.spec.max_replicas)
        if wanted != current:
            deployment["spec"]["replicas"] = wanted
            written = await api.put(path, json=deployment)
            if written.status_code >= 400:
                log.warning("autoscaling: cannot scale %s: %s", target, written.text[:200])
                wanted = current
            else:
                log.info(
                    "autoscaling: deployment/%s from %d to %d replicas (%s)",
                    target,
                    current,
                    wanted,
                    ", ".join(_describe(r) for r in readings),
                )
        reason = "FailedGetMetric" if problems else "ValidMetricFound"
        message = "; ".join(problems)
        await self._status(
            api,
            hpa,
            current=current,
            desired=wanted,
            metrics=[r.status for r in readings],
            reason=reason,
            message=message,
            now=now,
        )

    def _read(
        self, metric: MetricSpec, pods: Sequence[Pod], requests: Mapping[str, float], now: float
    ) -> _Reading | str | None:
        """A metric's per-pod values, or why it cannot be read (None: not a metric we read)."""
        if metric.type == "Pods" and metric.pods is not None:
            if metric.pods.metric.name not in POD_METRICS:
                return None
            values = [pod.requests_per_second for pod in pods]
            target = quantity(metric.pods.target.average_value or 0)
            status = {
                "type": "Pods",
                "pods": {
                    "metric": {"name": metric.pods.metric.name},
                    "current": {"averageValue": _format(_average(values))},
                },
            }
            return _Reading(values, target, status)
        source = metric.resource or metric.container_resource
        if metric.type not in ("Resource", "ContainerResource") or source is None:
            return None
        name = source.name
        if name == "cpu":
            raw = [v for v in (self._cpu_cores(pod.pid, now) for pod in pods) if v is not None]
        else:
            raw = [v for v in (self._memory_bytes(pod.pid) for pod in pods) if v is not None]
        return _resource_reading(name, raw, source.target, requests)

    def _cpu_cores(self, pid: int | None, now: float) -> float | None:
        """Cores the process group of `pid` used since the last pass (None the first time)."""
        if pid is None:
            return None
        ticks = sum(_ticks(self.proc / str(p) / "stat") for p in self._group(pid))
        last = self._cpu.get(pid)
        self._cpu[pid] = _Sample(ticks, now)
        if last is None or now <= last.at:
            return None
        return max(0.0, (ticks - last.ticks) / _TICKS / (now - last.at))

    def _memory_bytes(self, pid: int | None) -> float | None:
        if pid is None:
            return None
        total = 0
        for member in self._group(pid):
            try:
                total += int((self.proc / str(member) / "statm").read_text().split()[1]) * _PAGE
            except (OSError, IndexError, ValueError):
                continue
        return float(total)

    def _group(self, leader: int) -> list[int]:
        """The processes of the group `leader` leads (the app and whatever it started)."""
        members = []
        for entry in self.proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if len(fields) > 2 and fields[2] == str(leader):
                members.append(int(entry.name))
        return members or [leader]

    async def _status(
        self,
        api: httpx.AsyncClient,
        hpa: HorizontalPodAutoscaler,
        *,
        current: int,
        desired: int,
        metrics: list[dict[str, Any]],
        reason: str,
        message: str,
        now: float | None = None,
    ) -> None:
        path = (
            f"/apis/autoscaling/v2/namespaces/{hpa.namespace}/horizontalpodautoscalers/{hpa.name}"
        )
        found = await api.get(path)
        if found.status_code != 200:
            return
        body = found.json()
        old = body.get("status") or {}
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status: dict[str, Any] = {
            "currentReplicas": current,
            "desiredReplicas": desired,
            "currentMetrics": metrics,
            "conditions": [
                {
                    "type": "ScalingActive",
                    "status": "True" if reason == "ValidMetricFound" else "False",
                    "reason": reason,
                    "message": message,
                }
            ],
        }
        last = old.get("lastScaleTime")
        if desired != current and now is not None:
            last = stamp
        if last:
            status["lastScaleTime"] = last
        if status == {k: old.get(k) for k in status}:
            return
        body["status"] = status
        written = await api.put(path, json=body)
        if written.status_code >= 400 and written.status_code != 409:
            log.warning("autoscaling: cannot write %s's status: %s", hpa.name, written.text[:200])


def _metrics(hpa: HorizontalPodAutoscaler) -> list[MetricSpec]:
    spec = hpa.spec
    if spec.metrics:
        return spec.metrics
    utilization = spec.target_cpu_utilization_percentage or DEFAULT_CPU_UTILIZATION
    return [
        MetricSpec.model_validate(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": utilization},
                },
            }
        )
    ]


def _resource_reading(
    name: str, raw: list[float], target: MetricTarget, requests: Mapping[str, float]
) -> _Reading | str | None:
    current: dict[str, Any] = {}
    if target.type == "Utilization":
        request = requests.get(name, 0.0)
        if request <= 0:
            return f"missing request for {name}: a Utilization target needs resources.requests"
        values = [100.0 * value / request for value in raw]
        wanted = float(target.average_utilization or 0)
        current["averageUtilization"] = round(_average(values))
    elif target.average_value is not None:
        values = raw
        wanted = quantity(target.average_value)
    else:
        return None
    current["averageValue"] = _format(_average(raw))
    status = {"type": "Resource", "resource": {"name": name, "current": current}}
    return _Reading(values, wanted, status)


def _requests(deployment: Mapping[str, Any]) -> dict[str, float]:
    """The pod's resource requests: the sum over its containers."""
    totals: dict[str, float] = {}
    template = deployment.get("spec", {}).get("template", {}).get("spec", {})
    for container in template.get("containers") or []:
        for name, value in ((container.get("resources") or {}).get("requests") or {}).items():
            try:
                totals[name] = totals.get(name, 0.0) + quantity(value)
            except ValueError:
                continue
    return totals


def _ticks(stat: Path) -> int:
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    # utime, stime, cutime, cstime: fields 14 to 17 of proc(5), 12 to 15 after the name.
    return sum(int(value) for value in fields[11:15])


def _average(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _format(value: float) -> str:
    """A Kubernetes quantity: milli-units below 10, whole numbers above."""
    return f"{round(value * 1000)}m" if value < 10 else str(round(value))


def _describe(reading: _Reading) -> str:
    return f"{reading.status['type']} {_format(_average(reading.values))}/{_format(reading.target)}"
