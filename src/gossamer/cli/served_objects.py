"""Every object the control plane serves, typed by the resource model: what `analyze` and
`describe` read. Commands import this module when they run: it loads the resource model.

Each object is typed from the YAML that `gossamer get -o yaml` prints for it, so a problem's
`FILE:LINE` is `NAMESPACE/KIND.GROUP/NAME` and a line of that output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from gossamer.cli.resource_names import ResourceNames, kind_ref
from gossamer.control.client import ApiClient
from gossamer.resources.loader import LoadedResource, load_document
from gossamer.resources.problems import Problem
from gossamer.resources.registry import split_api_version
from gossamer.resources.yamlsource import read_documents


def object_yaml(data: Any) -> str:
    """An object (or a List of them) as YAML, keys in the order the API wrote them."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


@dataclass(slots=True)
class ServedObjects:
    """The objects that typed, the problems of every object, and each object's namespace."""

    resources: list[LoadedResource] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    namespace_of: dict[str, str] = field(default_factory=dict)
    """`NAMESPACE/KIND.GROUP/NAME` (a problem's file) -> namespace."""


def list_everything(client: ApiClient, names: ResourceNames) -> ServedObjects:
    """Every object of every served resource, in every namespace, typed."""
    found = ServedObjects()
    for served in names.resources:
        for item in client.list(served, None):
            where, namespace = type_object(item, found)
            found.namespace_of[where] = namespace
    return found


def type_object(item: Mapping[str, Any], into: ServedObjects) -> tuple[str, str]:
    """Type one object into `into`; returns its `NAMESPACE/KIND.GROUP/NAME` and namespace."""
    metadata = item.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    namespace = str(metadata.get("namespace") or "default")
    group, _ = split_api_version(str(item.get("apiVersion", "")))
    where = f"{namespace}/{kind_ref(str(item.get('kind', '')), group)}/{metadata.get('name', '')}"
    (document,) = read_documents(object_yaml(dict(item)), where)
    loaded, problems = load_document(document)
    if loaded is not None:
        into.resources.append(loaded)
    into.problems.extend(problems)
    return where, namespace
