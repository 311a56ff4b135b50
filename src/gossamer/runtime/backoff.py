"""Restart delays that grow like Kubernetes' CrashLoopBackOff: double per crash, capped, reset."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """How long to wait before restarting a process that exited.

    The first restart waits `initial_s`, each further one twice the last, up to `max_s`. A run
    that lasted `reset_after_s` or longer counts as healthy: the next delay is `initial_s` again.
    The defaults are the kubelet's (10 s, 5 min, 10 min).
    """

    initial_s: float = 10.0
    max_s: float = 300.0
    reset_after_s: float = 600.0

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.max_s < self.initial_s or self.reset_after_s < 0:
            raise ValueError(
                f"backoff needs 0 <= initial_s <= max_s and reset_after_s >= 0: {self}"
            )


class CrashLoopBackoff:
    """The restart delays of one process; sans-IO: the caller says how long each run lasted."""

    __slots__ = ("_next_s", "policy")

    def __init__(self, policy: BackoffPolicy) -> None:
        self.policy = policy
        self._next_s = policy.initial_s

    def __repr__(self) -> str:
        return f"<CrashLoopBackoff next {self._next_s:g}s of at most {self.policy.max_s:g}s>"

    def delay_after(self, ran_for_s: float) -> float:
        """The delay before restarting a process whose run just ended after `ran_for_s` seconds."""
        if ran_for_s >= self.policy.reset_after_s:
            self._next_s = self.policy.initial_s
        delay = self._next_s
        self._next_s = min(self.policy.max_s, delay * 2)
        return delay
