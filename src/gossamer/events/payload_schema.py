"""A topic's JSON Schema, compiled once, reporting each violation with the field's path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jsonschema import ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from gossamer.events.errors import SchemaViolationError, Violation
from gossamer.resources.problems import format_path

_MAX_VIOLATIONS = 20


class PayloadSchema:
    """Checks payloads against one topic's schema; a publish is refused whole on any violation."""

    __slots__ = ("_validator",)

    def __init__(self, schema: Mapping[str, Any]) -> None:
        cls = validator_for(schema)
        self._validator: Validator = cls(dict(schema), format_checker=cls.FORMAT_CHECKER)

    def check(self, payloads: Sequence[Any]) -> None:
        """Raise SchemaViolationError listing where each failing payload breaks the schema."""
        violations: list[Violation] = []
        for index, payload in enumerate(payloads):
            for error in self._validator.iter_errors(payload):
                violations.append(Violation(index, _field_path(error), error.message))
                if len(violations) >= _MAX_VIOLATIONS:
                    break
            if len(violations) >= _MAX_VIOLATIONS:
                break
        if violations:
            violations.sort(key=lambda v: (v.index, v.path))
            raise SchemaViolationError(violations)


def _field_path(error: ValidationError) -> str:
    """`payload.items[2].name`; for a missing property, the path of the property itself."""
    path: list[str | int] = ["payload", *error.absolute_path]
    if error.validator == "required" and isinstance(error.instance, dict):
        # jsonschema raises one error per missing property and names it only in the message.
        required: list[str] = list(error.validator_value)  # type: ignore[arg-type]
        missing = [name for name in required if name not in error.instance]
        named = [name for name in missing if error.message.startswith(repr(name))]
        if named or missing:
            path.append((named or missing)[0])
    return format_path(tuple(path))
