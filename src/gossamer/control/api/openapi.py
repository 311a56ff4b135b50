"""The OpenAPI 3.1 description of the API, built from the catalog and the resource models."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from functools import cached_property
from typing import Any

from pydantic.json_schema import models_json_schema

from gossamer import __version__
from gossamer.control.api.admission import NAME_MAX_LENGTH, NAME_PATTERN, NAMESPACE_PATTERN
from gossamer.control.api.catalog import Catalog, ServedResource
from gossamer.control.api.mergepatch import MEDIA_TYPE as MERGE_PATCH
from gossamer.control.store.model import ResourceType

Json = dict[str, Any]
_REF = "#/components/schemas/{model}"


class OpenApi:
    """The document, built on first use and kept (it depends only on the catalog)."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    @cached_property
    def document(self) -> Json:
        """The whole OpenAPI document."""
        served = list(self._catalog)
        models = sorted({s.model for s in served}, key=lambda m: m.__name__)
        refs, definitions = models_json_schema(
            [(model, "validation") for model in models], ref_template=_REF, by_alias=True
        )
        schemas: Json = dict(definitions.get("$defs", {}))
        assert not schemas.keys() & _COMMON_SCHEMAS.keys(), "a model shadows a common schema"
        schemas.update(_COMMON_SCHEMAS)
        _pin_identity(schemas, refs, served)
        _constrain_metadata(schemas)
        stored = _stored_schemas(refs, served)
        paths: Json = {}
        for resource in served:
            schema = refs[(resource.model, "validation")]
            paths.update(_paths(resource, schema, stored[resource.type]))
        return {
            "openapi": "3.1.0",
            "info": {
                "title": "Gossamer control plane",
                "version": __version__,
                "description": "Kubernetes-style resource API of the Gossamer service mesh.",
            },
            "security": [{"bearer": []}],
            "paths": paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
        }


def _stored_schemas(
    refs: Mapping[Any, Json], served: list[ServedResource]
) -> dict[ResourceType, Json]:
    """What a read may return for each stored type: any of its versions' models, since an
    object comes back as written when the URL's version has another schema."""
    found: defaultdict[ResourceType, list[Json]] = defaultdict(list)
    for resource in served:
        ref = refs[(resource.model, "validation")]
        if ref not in found[resource.type]:
            found[resource.type].append(ref)
    return {kind: one[0] if len(one) == 1 else {"anyOf": one} for kind, one in found.items()}


def _paths(resource: ServedResource, schema: Json, stored: Json) -> Json:
    """The three paths of a resource; writes return the URL's version, reads what is stored."""
    base = resource.base_path
    namespaced = f"{base}/namespaces/{{namespace}}/{resource.plural}"
    found = _object_response(stored)
    written = _object_response(schema)
    as_json = _body(schema, "application/json")
    delete_options = _body({"$ref": _REF.format(model="DeleteOptions")}, "application/json")
    writes = (413, 422, 503)
    return {
        namespaced: {
            "parameters": [_path_param("namespace", _NAMESPACE)],
            "get": _list_operation(resource, "Namespaced", stored),
            "post": _operation(resource, "create", written, (409, *writes), code=201, body=as_json),
        },
        f"{namespaced}/{{name}}": {
            "parameters": [_path_param("namespace", _NAMESPACE), _path_param("name", _NAME)],
            "get": _operation(resource, "read", found, (404, 503)),
            "put": _operation(resource, "replace", written, (404, 409, *writes), body=as_json),
            "patch": _operation(
                resource,
                "patch",
                written,
                (404, 409, 415, *writes),
                body=_body({"type": "object"}, MERGE_PATCH),
            ),
            "delete": _operation(resource, "delete", found, (404, 409, 503), body=delete_options),
        },
        f"{base}/{resource.plural}": {"get": _list_operation(resource, "AllNamespaces", stored)},
    }


def _operation_id(verb: str, resource: ServedResource, infix: str = "Namespaced") -> str:
    group = "".join(p.capitalize() for p in (resource.group or "core").split("."))
    return f"{verb}{group}{resource.version.capitalize()}{infix}{resource.kind}"


def _operation(
    resource: ServedResource,
    verb: str,
    success: Json,
    errors: tuple[int, ...],
    *,
    code: int = 200,
    body: Json | None = None,
    infix: str = "Namespaced",
    parameters: list[Json] | None = None,
) -> Json:
    responses: Json = {str(code): success}
    for status in (400, 401, 403, *errors):
        responses[str(status)] = _status_response()
    operation: Json = {
        "operationId": _operation_id(verb, resource, infix),
        "tags": [resource.api_version],
        "responses": responses,
    }
    if body is not None:
        operation["requestBody"] = body
    if parameters:
        operation["parameters"] = parameters
    return operation


def _list_operation(resource: ServedResource, infix: str, stored: Json) -> Json:
    parameters = [
        _query(
            "labelSelector",
            {"type": "string"},
            "e.g. app=web,tier!=db,env in (a,b),!legacy",
        ),
        _query(
            "watch",
            {"type": "boolean"},
            "stream newline-delimited watch events instead of a list",
        ),
        _query(
            "resourceVersion",
            {"type": "string", "pattern": "^[0-9]*$"},
            "with watch: deliver changes after this version (empty or 0: every object first)",
        ),
        _query(
            "timeoutSeconds",
            {"type": "integer", "minimum": 0},
            "with watch: end the stream after this long (0: the default; at most an hour)",
        ),
    ]
    success = {
        "description": (
            f"a {resource.kind}List, or with watch=true a stream of watch events: one "
            "WatchEvent object per line"
        ),
        "content": {"application/json": {"schema": _list_schema(resource, stored)}},
    }
    return _operation(resource, "list", success, (410, 503), infix=infix, parameters=parameters)


def _list_schema(resource: ServedResource, stored: Json) -> Json:
    """A List of this resource: its items as a read returns them."""
    return {
        "allOf": [
            {"$ref": _REF.format(model="List")},
            {
                "properties": {
                    "apiVersion": {"const": resource.api_version},
                    "kind": {"const": f"{resource.kind}List"},
                    "items": {"type": "array", "items": stored},
                }
            },
        ]
    }


def _body(schema: Json, media_type: str) -> Json:
    return {"content": {media_type: {"schema": schema}}}


def _object_response(schema: Json) -> Json:
    return {"description": "the object", "content": {"application/json": {"schema": schema}}}


def _status_response() -> Json:
    schema = {"$ref": _REF.format(model="Status")}
    return {"description": "a Status", "content": {"application/json": {"schema": schema}}}


def _path_param(name: str, schema: Json) -> Json:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: Json, description: str) -> Json:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def _pin_identity(schemas: Json, refs: Mapping[Any, Json], served: list[ServedResource]) -> None:
    """A model's apiVersion is one of the versions served with it, and its kind is fixed."""
    versions: defaultdict[str, set[str]] = defaultdict(set)
    kinds: dict[str, str] = {}
    for resource in served:
        name = refs[(resource.model, "validation")]["$ref"].rpartition("/")[2]
        versions[name].add(resource.api_version)
        kinds[name] = resource.kind
    for name, kind in kinds.items():
        properties = schemas[name].get("properties", {})
        if "apiVersion" in properties:
            properties["apiVersion"] = {"enum": sorted(versions[name])}
        if "kind" in properties:
            properties["kind"] = {"const": kind}


def _constrain_metadata(schemas: Json) -> None:
    """Names and namespaces are DNS names; the models check that after parsing, so their
    schemas do not say it."""
    properties = schemas.get("ObjectMeta", {}).get("properties", {})
    if "name" in properties:
        properties["name"] = {"anyOf": [_NAME, {"type": "null"}], "default": None}
    if "namespace" in properties:
        # The API takes the URL's namespace when the body has none; a null is not none.
        properties["namespace"] = _NAMESPACE


_NAMESPACE: Json = {"type": "string", "pattern": f"^{NAMESPACE_PATTERN}$", "maxLength": 63}
_NAME: Json = {"type": "string", "pattern": f"^{NAME_PATTERN}$", "maxLength": NAME_MAX_LENGTH}


_COMMON_SCHEMAS: Json = {
    "Status": {
        "type": "object",
        "properties": {
            "kind": {"const": "Status"},
            "apiVersion": {"const": "v1"},
            "status": {"enum": ["Failure"]},
            "message": {"type": "string"},
            "reason": {"type": "string"},
            "code": {"type": "integer"},
            "details": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "group": {"type": "string"},
                    "kind": {"type": "string"},
                    "causes": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "reason": {"type": "string"},
                                "field": {"type": "string"},
                                "message": {"type": "string"},
                                "line": {"type": "integer"},
                            },
                        },
                    },
                },
            },
        },
    },
    "List": {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {
                "type": "object",
                "properties": {"resourceVersion": {"type": "string"}},
            },
            "items": {"type": "array", "items": {"type": "object"}},
        },
    },
    "WatchEvent": {
        "type": "object",
        "properties": {
            "type": {"enum": ["ADDED", "MODIFIED", "DELETED", "ERROR"]},
            "object": {"type": "object"},
        },
    },
    "DeleteOptions": {
        "type": "object",
        "properties": {
            "preconditions": {
                "type": "object",
                "properties": {"resourceVersion": {"type": "string", "pattern": "^[1-9][0-9]*$"}},
            }
        },
    },
}
