"""An ApiProduct's API documentation: its services' OpenAPI 3 documents, combined into one.

The combined document keeps the operations the product's routes reach (a route's URI match
and methods, tried against each path template with its parameters filled in), names the
product's hosts as servers, and declares the product's API key (header or query parameter) as
the security every operation needs, since the gateway asks for it. Components are merged, the
first document's definition winning when two name the same schema. Pure: parsing and combining
and reading them from the product's ConfigMaps; the control plane combines them, `validate`
names what cannot be read, the gateway serves the result.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from gossamer.resources.kinds.gossamer_kinds import ApiProduct
from gossamer.resources.podconfig import ConfigSource

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_PARAMETER = re.compile(r"\{[^}/]+\}")
MAX_DOCUMENT_BYTES = 1 << 20
"""A ConfigMap holds at most 1 MiB."""


class OpenApiError(ValueError):
    """A document that is not OpenAPI 3, with where and why."""


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """A product route: `kind` exact, prefix or regex; no methods means every method."""

    kind: str
    value: str
    methods: tuple[str, ...] = ()

    def covers(self, template: str, method: str) -> bool:
        """Whether requests to this path template and method belong to the route."""
        if self.methods and method.upper() not in self.methods:
            return False
        path = _PARAMETER.sub("1", template)
        if self.kind == "exact":
            return path == self.value
        if self.kind == "prefix":
            return path.startswith(self.value)
        return re.fullmatch(self.value, path) is not None


def parse(text: str) -> dict[str, Any]:
    """An OpenAPI 3 document from its YAML or JSON text; OpenApiError says what is wrong."""
    if len(text.encode()) > MAX_DOCUMENT_BYTES:
        raise OpenApiError(f"larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise OpenApiError(f"{where}{problem}") from None
    if not isinstance(document, dict):
        raise OpenApiError("not a mapping: an OpenAPI document is an object")
    version = document.get("openapi")
    if not isinstance(version, str) or not version.startswith("3."):
        found = "none" if version is None else repr(version)
        raise OpenApiError(f"openapi: must be a 3.x version (found {found}; Swagger 2 is not read)")
    paths = document.get("paths", {})
    if not isinstance(paths, dict):
        raise OpenApiError("paths: must be an object")
    for template, item in paths.items():
        if not isinstance(template, str) or not template.startswith("/"):
            raise OpenApiError(f"paths: {template!r} does not start with /")
        if not isinstance(item, dict):
            raise OpenApiError(f"paths.{template}: must be an object")
    return document


def combine(
    documents: Sequence[Mapping[str, Any]],
    routes: Sequence[RouteMatch],
    *,
    title: str,
    description: str,
    hosts: Sequence[str],
    key_header: str,
    key_param: str,
) -> dict[str, Any]:
    """The product's document: the operations its routes reach, secured by its API key."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    version = "1.0.0"
    for document in documents:
        info = document.get("info") or {}
        if isinstance(info, dict) and isinstance(info.get("version"), str) and version == "1.0.0":
            version = info["version"]
        for template, item in (document.get("paths") or {}).items():
            for method in METHODS:
                operation = item.get(method)
                if not isinstance(operation, dict):
                    continue
                if not any(route.covers(template, method) for route in routes):
                    continue
                kept = {k: v for k, v in operation.items() if k != "security"}
                shared = item.get("parameters")
                if isinstance(shared, list) and shared:
                    kept["parameters"] = [*shared, *(kept.get("parameters") or [])]
                paths.setdefault(template, {}).setdefault(method, kept)
        components = document.get("components") or {}
        for name, schema in (components.get("schemas") or {}).items():
            schemas.setdefault(name, schema)
    schemes: dict[str, Any] = {}
    if key_header:
        schemes["apiKeyHeader"] = {"type": "apiKey", "in": "header", "name": key_header}
    if key_param:
        schemes["apiKeyQuery"] = {"type": "apiKey", "in": "query", "name": key_param}
    combined: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version, "description": description},
        "servers": [{"url": f"https://{host}"} for host in hosts if "*" not in host]
        or [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": schemas, "securitySchemes": schemes},
        "security": [{name: []} for name in schemes],
    }
    return combined


def product_documents(
    resource: ApiProduct, source: ConfigSource
) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """The product's OpenAPI documents, and (index in `spec.openapi.specs`, problem) for each
    one that cannot be read."""
    documents: list[dict[str, Any]] = []
    problems: list[tuple[int, str]] = []
    docs = resource.spec.openapi
    for index, origin in enumerate(docs.specs if docs is not None else ()):
        ref = origin.config_map_key_ref
        values = source.config_maps.get((resource.namespace, ref.name))
        if values is None:
            problems.append((index, f"no ConfigMap {ref.name} in namespace {resource.namespace}"))
            continue
        if ref.key not in values:
            problems.append((index, f"ConfigMap {ref.name} has no key {ref.key}"))
            continue
        try:
            value = values[ref.key]
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            documents.append(parse(text))
        except OpenApiError as error:
            problems.append((index, f"{ref.name}/{ref.key} is not OpenAPI 3: {error}"))
    return documents, problems
