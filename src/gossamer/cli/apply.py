"""`gossamer apply -f PATH`: create each object, or replace it when it differs from the server's.

Manifests are validated first, as `gossamer validate` does; if any document has an error,
nothing is applied. Each object then prints one line, as kubectl does:
`virtualservice.networking.istio.io/reviews created`, `configured` or `unchanged`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gossamer.cli.session import (
    ACCESS_DENIED,
    Namespace,
    Server,
    Session,
    Token,
    fail,
    open_session,
)

if TYPE_CHECKING:
    from gossamer.control.api.catalog import ServedResource
    from gossamer.resources.loader import LoadedResource

Files = Annotated[
    list[Path],
    typer.Option(
        "--filename",
        "-f",
        exists=True,
        help="A manifest file or a folder of them (searched recursively); may be repeated.",
    ),
]

# Metadata the server owns: what a manifest says about these never makes an object differ.
_SERVER_METADATA = frozenset(
    {"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink"}
)


def apply(
    files: Files, namespace: Namespace = None, server: Server = None, token: Token = None
) -> None:
    """Create or update the objects in manifests; exit 1 if any was refused."""
    from gossamer.control.client import StatusError

    resources = load_manifests(files)
    targets = [(loaded, target_namespace(loaded, namespace)) for loaded in resources]
    failed = False
    with open_session(server, token) as session:
        for loaded, where in targets:
            try:
                typer.echo(_apply_one(session, loaded, where))
            except StatusError as error:
                if error.code in ACCESS_DENIED:
                    raise
                session.report(error, f"error when applying {loaded.where}")
                failed = True
    raise typer.Exit(1 if failed else 0)


def load_manifests(files: Sequence[Path]) -> list[LoadedResource]:
    """The resources in the files; on any error, print every problem as `validate` does and exit 1.

    Only each document's own checks run: checks across resources (`gossamer analyze`) would
    see the files alone, not what the server already holds.
    """
    from gossamer.cli.validate import print_validation
    from gossamer.resources.loader import load_paths
    from gossamer.resources.problems import Severity, sort_key
    from gossamer.resources.validation import Validation

    loaded = load_paths(files)
    if not loaded.files:
        where = ", ".join(str(f) for f in files)
        fail(f"no manifest files (.yaml, .yml, .json) in {where}", 2)
    if any(problem.severity is Severity.ERROR for problem in loaded.problems):
        problems = tuple(sorted(loaded.problems, key=sort_key))
        print_validation(Validation(loaded, problems, strict=False), False)
        raise typer.Exit(1)
    return loaded.resources


def target_namespace(loaded: LoadedResource, namespace: str | None) -> str:
    """The manifest's namespace, else `-n`, else default; a manifest and `-n` that differ fail."""
    written = loaded.resource.metadata.namespace
    if written and namespace and written != namespace:
        fail(
            f"{loaded.where}: the namespace of {loaded.kind} {loaded.name} ({written}) does not "
            f"match --namespace {namespace}; pass --namespace {written} or leave it out"
        )
    return written or namespace or "default"


def served_of(session: Session, loaded: LoadedResource) -> ServedResource:
    """Where the server keeps a loaded resource's kind at its apiVersion."""
    served = session.client.served(loaded.resource.api_version, loaded.kind)
    # The loader accepts only kinds of the registry the catalog is built from.
    assert served is not None, f"{loaded.resource.api_version} {loaded.kind} is not served"
    return served


def _apply_one(session: Session, loaded: LoadedResource, namespace: str) -> str:
    from gossamer.cli.resource_names import object_ref
    from gossamer.control.client import StatusError

    client, served = session.client, served_of(session, loaded)
    desired = _body(loaded.document.data, namespace)
    ref = object_ref(served, loaded.name)
    try:
        live = client.get(served, namespace, loaded.name)
    except StatusError as error:
        if error.code != 404:
            raise
        _warn(client.create(served, namespace, desired).warnings)
        return f"{ref} created"
    if _comparable(desired) == _comparable(live):
        return f"{ref} unchanged"
    desired["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
    _warn(client.replace(served, namespace, loaded.name, desired).warnings)
    return f"{ref} configured"


def _body(data: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """The manifest as JSON data (YAML dates become ISO text), in its target namespace."""
    body: dict[str, Any] = json.loads(json.dumps(data, default=_json_value))
    metadata = body.setdefault("metadata", {})
    metadata["namespace"] = namespace
    for field in _SERVER_METADATA:
        metadata.pop(field, None)
    return body


def _json_value(value: object) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


def _comparable(body: Mapping[str, Any]) -> dict[str, Any]:
    """What an apply may change: everything but status and server-owned metadata; an empty
    value is the same as none."""
    metadata = body.get("metadata") or {}
    kept = {k: v for k, v in metadata.items() if k not in _SERVER_METADATA and v not in ({}, [])}
    rest = {k: v for k, v in body.items() if k not in ("metadata", "status") and v not in ({}, [])}
    return {**rest, "metadata": kept}


def _warn(warnings: Sequence[str]) -> None:
    for warning in warnings:
        typer.echo(f"Warning: {warning}", err=True)
