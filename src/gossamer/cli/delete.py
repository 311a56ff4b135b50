"""`gossamer delete -f PATH` or `gossamer delete KIND NAME`: delete objects, kubectl's way."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gossamer.cli.session import (
    ACCESS_DENIED,
    Namespace,
    Server,
    Session,
    Token,
    namespace_or_default,
    open_session,
)

if TYPE_CHECKING:
    from gossamer.control.api.catalog import ServedResource
    from gossamer.resources.loader import LoadedResource


def delete(
    kind: Annotated[
        str | None,
        typer.Argument(help="Kind: VirtualService, virtualservices, vs, ... (or KIND/NAME)."),
    ] = None,
    name: Annotated[str | None, typer.Argument(help="Name of the object.")] = None,
    *,
    files: Annotated[
        list[Path] | None,
        typer.Option(
            "--filename",
            "-f",
            exists=True,
            help="Delete the objects of these manifests (files or folders); may be repeated.",
        ),
    ] = None,
    namespace: Namespace = None,
    ignore_not_found: Annotated[
        bool, typer.Option(help="An object that is not there is not an error.")
    ] = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """Delete objects named by manifests or by kind and name; exit 1 if any could not be."""
    from gossamer.cli.apply import load_manifests
    from gossamer.cli.resource_names import split_kind_name

    if files and kind:
        raise typer.BadParameter("give either -f PATH or KIND NAME, not both")
    if kind is not None:
        kind, name = split_kind_name(kind, name)
    if not files and (kind is None or name is None):
        raise typer.BadParameter("give -f PATH, or KIND and NAME")
    manifests = load_manifests(files) if files else []
    with open_session(server, token) as session:
        if files:
            targets = _targets(session, manifests, namespace)
        else:
            assert kind is not None and name is not None
            targets = [(session.resolve(kind), namespace_or_default(namespace), name)]
        failed = False
        for served, where, target in targets:
            failed |= not _delete_one(session, served, where, target, ignore_not_found)
    raise typer.Exit(1 if failed else 0)


def _targets(
    session: Session, manifests: list[LoadedResource], namespace: str | None
) -> list[tuple[ServedResource, str, str]]:
    from gossamer.cli.apply import served_of, target_namespace

    return [
        (served_of(session, loaded), target_namespace(loaded, namespace), loaded.name)
        for loaded in manifests
    ]


def _delete_one(
    session: Session, served: ServedResource, namespace: str, name: str, ignore_not_found: bool
) -> bool:
    """Delete one object and say so; False when it could not be deleted."""
    from gossamer.cli.resource_names import kind_ref
    from gossamer.control.client import StatusError

    try:
        session.client.delete(served, namespace, name)
    except StatusError as error:
        if error.code == 404 and ignore_not_found:
            return True
        if error.code in ACCESS_DENIED:
            raise
        session.report(error)
        return False
    typer.echo(f'{kind_ref(served.kind, served.group)} "{name}" deleted')
    return True
