"""The HorizontalPodAutoscaler's arithmetic, as Kubernetes' controller does it.

Per metric, the replicas wanted are `ceil(sum of the ready replicas' values / target per
replica)`, unless the average is within the tolerance (10%) of the target, when nothing
changes; the largest proposal over the metrics wins. Then, per direction:

- stabilization: a scale-down takes the highest proposal of the last
  `stabilizationWindowSeconds` (300 by default), a scale-up the lowest of its window (0 by
  default), so that a short dip or spike does not move the replicas;
- rate: at most what the direction's policies allow over their periods (by default up: the
  larger of +100% and +4 pods per 15 s; down: -100% per 15 s), `selectPolicy` choosing the
  policy that allows the most (Max), the least (Min), or none (Disabled);
- bounds: never below `minReplicas` nor above `maxReplicas`.

Nothing here reads a clock or a process: the controller (autoscaler.py) passes the time and
the values in, so that the rules can be checked on their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from gossamer.resources.kinds.autoscaling import HPAScalingRules

TOLERANCE = 0.1
"""A proposal within 10% of the current replicas' load changes nothing (Kubernetes' default)."""
DOWN_WINDOW_S = 300.0
"""Kubernetes' default scale-down stabilization window."""


@dataclass(frozen=True, slots=True)
class Policy:
    """At most `value` pods (or percent) of change per `period_s`."""

    kind: Literal["Pods", "Percent"]
    value: int
    period_s: float


@dataclass(frozen=True, slots=True)
class Rules:
    """How one direction may move."""

    window_s: float
    select: Literal["Max", "Min", "Disabled"]
    policies: tuple[Policy, ...]


UP_DEFAULT = Rules(0.0, "Max", (Policy("Percent", 100, 15.0), Policy("Pods", 4, 15.0)))
DOWN_DEFAULT = Rules(DOWN_WINDOW_S, "Max", (Policy("Percent", 100, 15.0),))


def rules_from(given: HPAScalingRules | None, default: Rules) -> Rules:
    """A direction's rules from the manifest, each absent field taken from the default."""
    if given is None:
        return default
    policies = default.policies
    if given.policies:
        policies = tuple(Policy(p.type, p.value, float(p.period_seconds)) for p in given.policies)
    window = given.stabilization_window_seconds
    return Rules(
        float(window) if window is not None else default.window_s,
        given.select_policy or default.select,
        policies,
    )


def proposal(current: int, values: Sequence[float], target: float) -> int:
    """Replicas for one metric: `values` are the ready replicas' (per replica), `target` the
    value wanted per replica. With no value, nothing changes."""
    if not values or target <= 0:
        return current
    ratio = (sum(values) / len(values)) / target
    if abs(ratio - 1.0) <= TOLERANCE:
        return current
    return max(1, math.ceil(sum(values) / target))


@dataclass
class Recommender:
    """One autoscaler's memory: its recent proposals and the changes it made."""

    up: Rules = UP_DEFAULT
    down: Rules = DOWN_DEFAULT
    proposals: list[tuple[float, int]] = field(default_factory=list)
    changes: list[tuple[float, int]] = field(default_factory=list)
    """(when, replicas added: negative for removed)."""

    def decide(self, now: float, current: int, proposed: int, low: int, high: int) -> int:
        """The replicas to run now, from the metrics' `proposed` (already the max over them)."""
        proposed = min(max(proposed, low), high)
        self.proposals.append((now, proposed))
        keep = max(self.up.window_s, self.down.window_s)
        self.proposals = [(t, n) for t, n in self.proposals if now - t <= keep]
        up_window = [n for t, n in self.proposals if now - t <= self.up.window_s]
        down_window = [n for t, n in self.proposals if now - t <= self.down.window_s]
        wanted = current
        if current < min(up_window):
            wanted = self._limit_up(now, current, min(up_window))
        elif current > max(down_window):
            wanted = self._limit_down(now, current, max(down_window))
        wanted = min(max(wanted, low), high)
        if wanted != current:
            self.changes.append((now, wanted - current))
        longest = max((p.period_s for p in (*self.up.policies, *self.down.policies)), default=0)
        self.changes = [(t, d) for t, d in self.changes if now - t <= longest]
        return wanted

    def _limit_up(self, now: float, current: int, wanted: int) -> int:
        rules = self.up
        if rules.select == "Disabled":
            return current
        limits = []
        for policy in rules.policies:
            added = sum(d for t, d in self.changes if d > 0 and now - t <= policy.period_s)
            start = current - added
            if policy.kind == "Pods":
                limits.append(start + policy.value)
            else:
                limits.append(math.ceil(start * (1 + policy.value / 100)))
        if not limits:
            return wanted
        limit = max(limits) if rules.select == "Max" else min(limits)
        return max(current, min(wanted, limit))

    def _limit_down(self, now: float, current: int, wanted: int) -> int:
        rules = self.down
        if rules.select == "Disabled":
            return current
        limits = []
        for policy in rules.policies:
            removed = -sum(d for t, d in self.changes if d < 0 and now - t <= policy.period_s)
            start = current + removed
            if policy.kind == "Pods":
                limits.append(start - policy.value)
            else:
                limits.append(math.floor(start * (1 - policy.value / 100)))
        if not limits:
            return wanted
        # Max: the policy that allows the largest change, i.e. the lowest floor.
        limit = min(limits) if rules.select == "Max" else max(limits)
        return min(current, max(wanted, limit))


def quantity(text: str | int | float) -> float:
    """A Kubernetes quantity as a number: `500m` is 0.5, `128Mi` is 134217728, `2` is 2."""
    if isinstance(text, int | float):
        return float(text)
    value = text.strip()
    suffixes = {
        "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
        "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
        "E": 1e18,
    }  # fmt: skip
    for suffix in sorted(suffixes, key=len, reverse=True):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * suffixes[suffix]
    return float(value)
