"""Look inside the kind models: the fields at a path and their types, for hints and docs."""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from gossamer.resources.yamlsource import FieldPath


@dataclass(frozen=True, slots=True)
class FieldShape:
    """What a field holds: a model, a list or map of them, or a plain value."""

    alias: str
    description: str
    model: type[BaseModel] | None
    container: Literal["one", "list", "map"]
    required: bool


def shape_of(annotation: Any) -> tuple[str, type[BaseModel] | None, Literal["one", "list", "map"]]:
    """Describe a type annotation: its readable name, the model inside it, how it is held."""
    annotation = _strip(annotation)
    origin = get_origin(annotation)
    if origin is list:
        name, model, _ = shape_of(get_args(annotation)[0])
        return f"list of {name}", model, "list"
    if origin is dict:
        name, model, _ = shape_of(get_args(annotation)[1])
        return f"map of {name}", model, "map"
    if origin is Literal:
        return " | ".join(str(value) for value in get_args(annotation)), None, "one"
    if origin in (Union, types.UnionType):
        parts = [shape_of(arg) for arg in get_args(annotation) if arg is not type(None)]
        model = next((part[1] for part in parts if part[1] is not None), None)
        return " or ".join(part[0] for part in parts), model, "one"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object", annotation, "one"
    return _plain_names.get(annotation, "any"), None, "one"


_plain_names: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
}


def _strip(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    args = get_args(annotation)
    if get_origin(annotation) in (Union, types.UnionType) and type(None) in args:
        rest = tuple(arg for arg in args if arg is not type(None))
        annotation = rest[0] if len(rest) == 1 else Union[rest]  # noqa: UP007 - built at runtime
        return _strip(annotation)
    return annotation


def fields_of(model: type[BaseModel]) -> dict[str, FieldShape]:
    """The fields of a model by the name a manifest writes (its alias)."""
    found: dict[str, FieldShape] = {}
    for name, info in model.model_fields.items():
        alias = info.alias or name
        description, inner, container = shape_of(info.annotation)
        found[alias] = FieldShape(alias, description, inner, container, info.is_required())
    return found


def model_at(model: type[BaseModel], path: FieldPath) -> type[BaseModel] | None:
    """The model that holds the fields at `path` below `model`, or None if it is not a model."""
    current: type[BaseModel] | None = model
    position = 0
    while position < len(path) and current is not None:
        shape = fields_of(current).get(str(path[position]))
        if shape is None:
            return None
        position += 1
        if shape.container in ("list", "map"):
            if position >= len(path):
                return None
            position += 1
        current = shape.model
    return current
