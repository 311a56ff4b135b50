"""Which fields Gossamer acts on; the rest load and keep their value, and `--strict` names them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from gossamer.resources.loader import LoadedResource
from gossamer.resources.problems import Problem, Severity
from gossamer.resources.yamlsource import FieldPath

NOT_ENFORCED = "accepted, not enforced yet"

# Field paths (camelCase, no list indices) that some part of Gossamer acts on, by kind. A
# capability that starts acting on a field adds it here; docs/resources.md follows (`make docs`).
# A field not listed loads and is kept, and `gossamer validate --strict` reports it.
ENFORCED: dict[str, frozenset[str]] = {}

# Fields that identify an object, describe it for people, or are written by a cluster: never
# reported, since there is nothing to act on.
_STRUCTURAL = frozenset({"apiVersion", "kind", "metadata", "spec", "status", "spec.description"})


def is_enforced(kind: str, pattern: str) -> bool:
    """Whether Gossamer acts on the field at `pattern` (e.g. `spec.http.route`) of `kind`."""
    return pattern in _STRUCTURAL or pattern in ENFORCED.get(kind, frozenset())


def not_enforced(loaded: LoadedResource) -> Iterator[Problem]:
    """A notice for each field this resource sets that Gossamer does not act on yet.

    Only the outermost such field is named: when `spec.http` is not enforced, nothing below it is
    listed again.
    """
    yield from _walk(loaded, loaded.resource, (), "")


def _walk(
    loaded: LoadedResource, model: BaseModel, path: FieldPath, pattern: str
) -> Iterator[Problem]:
    fields = type(model).model_fields
    for name in sorted(model.model_fields_set, key=list(fields).index):
        alias = fields[name].alias or name
        child_pattern = f"{pattern}.{alias}" if pattern else alias
        child_path = (*path, alias)
        if not is_enforced(loaded.kind, child_pattern):
            yield loaded.problem(child_path, NOT_ENFORCED, Severity.NOTICE, "not-enforced")
            continue
        if child_pattern in ("metadata", "status"):
            continue
        yield from _descend(loaded, getattr(model, name), child_path, child_pattern)


def _descend(
    loaded: LoadedResource, value: Any, path: FieldPath, pattern: str
) -> Iterator[Problem]:
    if isinstance(value, BaseModel):
        yield from _walk(loaded, value, path, pattern)
    elif isinstance(value, list):
        for position, item in enumerate(value):
            if isinstance(item, BaseModel):
                yield from _walk(loaded, item, (*path, position), pattern)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, BaseModel):
                yield from _walk(loaded, item, (*path, str(key)), pattern)
