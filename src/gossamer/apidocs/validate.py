"""Requests checked against an ApiProduct's OpenAPI document at the gateway (opt-in).

For a request that matches one of the document's operations (its method and path template),
the path, query and header parameters are checked (required, and their schema: type, enum,
bounds, pattern, the string turned into the type the schema asks for), then a JSON request body
against its schema. The first problem found is the answer: a 400 naming the field
(`query.limit`, `path.assetId`, `header.x-trace`, `body.owner`). A request that matches no
operation is not the document's business and goes on. Read by a gateway only when a product
asks for it: jsonschema is imported then, not by every proxy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from jsonschema import Draft202012Validator

MAX_BODY_BYTES = 65536
"""The largest body checked (the gateway holds it until it is whole)."""
_PARAMETER = re.compile(r"\{([^}/]+)\}")
_MAX_REF_DEPTH = 32


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong with a request: the field (`query.limit`) and why."""

    field: str
    message: str


@dataclass(frozen=True, slots=True)
class _Parameter:
    name: str
    where: str
    required: bool
    validator: Draft202012Validator | None
    kind: str


@dataclass(frozen=True, slots=True)
class Operation:
    """One method and path template of the document, ready to check requests with."""

    method: bytes
    path: re.Pattern[str]
    parameters: tuple[_Parameter, ...]
    body: Draft202012Validator | None
    body_required: bool

    def check_head(
        self, path: str, query: str, headers: Sequence[tuple[bytes, bytes]]
    ) -> Problem | None:
        """The parameters' first problem, or None."""
        matched = self.path.fullmatch(path)
        values: dict[str, dict[str, list[str]]] = {
            "path": {k: [v] for k, v in (matched.groupdict() if matched else {}).items()},
            "query": parse_qs(query, keep_blank_values=True),
            "header": {},
        }
        for name, value in headers:
            values["header"].setdefault(name.decode("latin-1").lower(), []).append(
                value.decode("latin-1")
            )
        for parameter in self.parameters:
            found = values.get(parameter.where, {}).get(parameter.name)
            field = f"{parameter.where}.{parameter.name}"
            if not found:
                if parameter.required:
                    return Problem(field, f"{field}: required")
                continue
            if parameter.validator is None:
                continue
            value = _coerce(found if parameter.kind == "array" else found[0], parameter.kind)
            error = next(iter(parameter.validator.iter_errors(value)), None)
            if error is not None:
                return Problem(field, f"{field}: {error.message}")
        return None

    def check_body(self, body: bytes) -> Problem | None:
        """The JSON body's first problem, or None."""
        if not body:
            return Problem("body", "body: required") if self.body_required else None
        if self.body is None:
            return None
        try:
            document = json.loads(body)
        except ValueError as invalid:
            return Problem("body", f"body: not JSON ({invalid})")
        error = next(iter(self.body.iter_errors(document)), None)
        if error is None:
            return None
        where = ".".join(str(part) for part in error.absolute_path)
        field = f"body.{where}" if where else "body"
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [n for n in error.validator_value if n not in error.instance]
            if missing:
                field = f"{field}.{missing[0]}"
        return Problem(field, f"{field}: {error.message}")

    @property
    def wants_body(self) -> bool:
        """Whether the body is checked (the gateway holds it until it is whole)."""
        return self.body is not None or self.body_required


class RequestValidator:
    """Every operation of one document."""

    __slots__ = ("operations",)

    def __init__(self, document: Mapping[str, Any]) -> None:
        resolve = _Resolver(document)
        operations = []
        for template, item in (document.get("paths") or {}).items():
            shared = item.get("parameters") or []
            for method, operation in item.items():
                if not isinstance(operation, dict) or method == "parameters":
                    continue
                operations.append(_operation(method, template, operation, shared, resolve))
        # Literal path segments first: /assets/mine before /assets/{assetId}.
        operations.sort(key=lambda op: op.path.pattern.count("(?P<"))
        self.operations = tuple(operations)

    def operation(self, method: bytes, path: str) -> Operation | None:
        """The operation a request is for, or None when the document has none for it."""
        for operation in self.operations:
            if operation.method == method and operation.path.fullmatch(path):
                return operation
        return None


class _Resolver:
    """`$ref`s to `#/components/...` inlined (OpenAPI's schemas are JSON Schema with them)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document

    def __call__(self, node: Any, depth: int = 0) -> Any:
        if depth > _MAX_REF_DEPTH:
            return {}
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/"):
                target: Any = self.document
                for part in reference[2:].split("/"):
                    target = target.get(part, {}) if isinstance(target, dict) else {}
                return self(target, depth + 1)
            return {key: self(value, depth + 1) for key, value in node.items()}
        if isinstance(node, list):
            return [self(item, depth + 1) for item in node]
        return node


def _operation(
    method: str, template: str, operation: Mapping[str, Any], shared: list[Any], resolve: _Resolver
) -> Operation:
    pattern = "".join(
        f"(?P<{_group(part)}>[^/]+)" if index % 2 else re.escape(part)
        for index, part in enumerate(_PARAMETER.split(template))
    )
    parameters = []
    for raw in [*shared, *(operation.get("parameters") or [])]:
        parameter = resolve(raw)
        if not isinstance(parameter, dict) or parameter.get("in") not in (
            "path",
            "query",
            "header",
        ):
            continue
        schema = _schema(resolve(parameter.get("schema") or {}))
        where = parameter["in"]
        name = str(parameter.get("name", ""))
        parameters.append(
            _Parameter(
                name=_group(name)
                if where == "path"
                else name.lower()
                if where == "header"
                else name,
                where=where,
                required=bool(parameter.get("required")) or where == "path",
                validator=Draft202012Validator(schema) if schema else None,
                kind=str(schema.get("type", "string")),
            )
        )
    body = None
    request_body = resolve(operation.get("requestBody") or {})
    content = (request_body.get("content") or {}).get("application/json") or {}
    if isinstance(content, dict) and content.get("schema"):
        body = Draft202012Validator(_schema(content["schema"]))
    return Operation(
        method=method.upper().encode(),
        path=re.compile(pattern),
        parameters=tuple(parameters),
        body=body,
        body_required=bool(request_body.get("required")),
    )


def _group(name: str) -> str:
    """A path parameter's name as a regex group name."""
    return re.sub(r"\W", "_", name) or "_"


def _schema(schema: Any) -> dict[str, Any]:
    """An OpenAPI 3.0 schema as JSON Schema: `nullable` becomes a null type."""
    if not isinstance(schema, dict):
        return {}
    converted = {k: _schema_value(v) for k, v in schema.items() if k != "nullable"}
    if schema.get("nullable") and isinstance(schema.get("type"), str):
        converted["type"] = [schema["type"], "null"]
    return converted


def _schema_value(value: Any) -> Any:
    if isinstance(value, dict):
        return _schema(value) if value else value
    if isinstance(value, list):
        return [_schema_value(item) for item in value]
    return value


def _coerce(value: Any, kind: str) -> Any:
    """A parameter's text as the type its schema asks for (left as text when it is not one)."""
    if kind == "array":
        return list(value)
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
    except ValueError:
        return value
    if kind == "boolean" and value in ("true", "false"):
        return value == "true"
    return value
