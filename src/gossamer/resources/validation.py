"""Validation as `gossamer validate` runs it: load, check each resource, then all together."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gossamer.resources.analysis import analyze
from gossamer.resources.loader import LoadResult, load_paths
from gossamer.resources.problems import Problem, Severity, sort_key
from gossamer.resources.support import not_enforced


@dataclass(frozen=True, slots=True)
class Validation:
    """The outcome of validating some files."""

    loaded: LoadResult
    problems: tuple[Problem, ...]
    strict: bool

    def count(self, severity: Severity) -> int:
        """How many problems of one severity."""
        return sum(1 for problem in self.problems if problem.severity is severity)

    @property
    def ok(self) -> bool:
        """No errors; under --strict, no warnings and no fields that are not enforced either."""
        if self.strict:
            return not self.problems
        return self.count(Severity.ERROR) == 0


def validate_paths(paths: Iterable[Path], *, strict: bool = False) -> Validation:
    """Load the manifests under `paths` and collect every problem, in file and line order."""
    loaded = load_paths(paths)
    problems = list(loaded.problems)
    problems.extend(analyze(loaded.resources))
    if strict:
        for resource in loaded.resources:
            problems.extend(not_enforced(resource))
    return Validation(loaded, tuple(sorted(problems, key=sort_key)), strict)
