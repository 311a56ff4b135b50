"""Problems found in manifests, each tied to a file, a line and a field, printed one per line."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from gossamer.resources.yamlsource import FieldPath

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class Severity(StrEnum):
    """How much a problem matters: errors make a configuration unusable, warnings do not."""

    ERROR = "error"
    WARNING = "warning"
    NOTICE = "notice"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or worth knowing) about one field of one resource."""

    file: str
    line: int
    message: str
    severity: Severity = Severity.ERROR
    kind: str | None = None
    name: str | None = None
    path: str = ""
    code: str = "invalid"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: "
        if self.severity is not Severity.ERROR:
            where += f"{self.severity.value}: "
        if self.kind:
            where += f"{self.kind} {self.name or '(unnamed)'}: "
        if self.path:
            where += f"{self.path}: "
        return where + self.message

    def as_dict(self) -> dict[str, str | int | None]:
        """The problem as plain data, for `-o json`."""
        return {
            "file": self.file,
            "line": self.line,
            "severity": self.severity.value,
            "code": self.code,
            "kind": self.kind,
            "name": self.name,
            "path": self.path,
            "message": self.message,
        }


def format_path(path: FieldPath) -> str:
    """`("spec", "http", 0, "route")` -> `spec.http[0].route`; odd keys are quoted."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.match(part):
            text += f".{part}" if text else part
        else:
            text += f'["{part}"]'
    return text


def sort_key(problem: Problem) -> tuple[str, int, str, str]:
    """Order problems by file, then line, so output reads top to bottom."""
    return (problem.file, problem.line, problem.path, problem.message)
