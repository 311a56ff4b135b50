"""What to run: a process's command, log file, readiness check, restart policy and start order."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

ReadinessCheck = Callable[[], Awaitable[bool]]
"""Answers whether the process is ready now, e.g. by asking its admin endpoint."""


class SpecError(ValueError):
    """The process specs cannot be run: a duplicate name, an unknown dependency, a cycle."""


class RestartPolicy(enum.Enum):
    """When an exited process is started again, as a Kubernetes pod's restartPolicy."""

    ALWAYS = "Always"
    ON_FAILURE = "OnFailure"
    NEVER = "Never"

    def restarts(self, succeeded: bool) -> bool:
        """Whether a process that exited (with success or not) is started again."""
        return self is RestartPolicy.ALWAYS or (self is RestartPolicy.ON_FAILURE and not succeeded)


@dataclass(frozen=True, slots=True)
class ReadinessProbe:
    """A check polled every `period_s` while the process runs.

    A check that returns False, raises, or takes longer than `timeout_s` fails. The process is
    ready after one success, and no longer ready after `failure_threshold` failures in a row
    (Kubernetes' defaults: 3 failures, 1 s timeout).
    """

    check: ReadinessCheck
    period_s: float = 1.0
    timeout_s: float = 1.0
    failure_threshold: int = 3

    def __post_init__(self) -> None:
        if self.period_s <= 0 or self.timeout_s <= 0 or self.failure_threshold < 1:
            raise SpecError(
                f"readiness needs period_s > 0, timeout_s > 0, failure_threshold >= 1: {self}"
            )


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One process to supervise.

    `env` is added to the supervisor's own environment. Output (stdout and stderr) is appended
    to `log_path`. A process without a readiness probe is ready as soon as it has started.
    `after` names the processes that must be ready before this one starts (or restarts).
    `ports` are the TCP ports it listens on: while another process holds one, it is not ready,
    whatever its readiness check says (that answer may come from the other process).
    """

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    readiness: ReadinessProbe | None = None
    restart: RestartPolicy = RestartPolicy.ALWAYS
    stop_grace_s: float = 10.0
    after: Sequence[str] = ()
    ports: Sequence[int] = ()
    restart_limit: int | None = None
    """After this many restarts a process that fails again is failed (a Job's backoffLimit);
    None: no limit."""

    def __post_init__(self) -> None:
        # Frozen all the way down: callers may keep and change the lists they passed.
        object.__setattr__(self, "argv", tuple(self.argv))
        object.__setattr__(self, "ports", tuple(self.ports))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        object.__setattr__(self, "after", tuple(self.after))
        if not self.name:
            raise SpecError("a process needs a name")
        if not self.argv:
            raise SpecError(f"{self.name}: argv is empty")
        if self.stop_grace_s < 0:
            raise SpecError(f"{self.name}: stop_grace_s must not be negative")
        if self.name in self.after:
            raise SpecError(f"{self.name}: cannot start after itself")


def start_waves(specs: Sequence[ProcessSpec]) -> tuple[tuple[str, ...], ...]:
    """Group the specs into waves: each wave depends only on the waves before it.

    Within a wave the given order is kept. Raises SpecError for duplicate names, unknown names
    in `after`, and dependency cycles (naming the processes that could never start).
    """
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SpecError(f"duplicate process names: {', '.join(duplicates)}")
    for spec in specs:
        unknown = [name for name in spec.after if name not in names]
        if unknown:
            raise SpecError(f"{spec.name}: starts after unknown processes: {', '.join(unknown)}")
    waves: list[tuple[str, ...]] = []
    placed: set[str] = set()
    remaining = list(specs)
    while remaining:
        wave = tuple(spec.name for spec in remaining if placed.issuperset(spec.after))
        if not wave:
            stuck = ", ".join(spec.name for spec in remaining)
            raise SpecError(f"dependency cycle: these can never start: {stuck}")
        waves.append(wave)
        placed.update(wave)
        remaining = [spec for spec in remaining if spec.name not in placed]
    return tuple(waves)
