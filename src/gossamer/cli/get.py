"""`gossamer get KIND [NAME]`: objects as a table, YAML, JSON or `kind.group/name` lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gossamer.cli.session import (
    AllNamespaces,
    Namespace,
    Server,
    Token,
    namespace_or_default,
    open_session,
)

if TYPE_CHECKING:
    from gossamer.control.api.catalog import ServedResource


class GetOutput(StrEnum):
    """What `get -o` prints instead of the table."""

    YAML = "yaml"
    JSON = "json"
    WIDE = "wide"
    NAME = "name"


def get(
    kind: Annotated[
        str,
        typer.Argument(
            help="Kind: VirtualService, virtualservices, virtualservice or vs; svc, deploy, ing, "
            "dr, gw, se, pa, ap, ra; or KIND/NAME."
        ),
    ],
    name: Annotated[str | None, typer.Argument(help="One object's name.")] = None,
    *,
    namespace: Namespace = None,
    all_namespaces: AllNamespaces = False,
    selector: Annotated[
        str,
        typer.Option(
            "--selector", "-l", help="Label selector: app=web, tier!=db, env in (a,b), ..."
        ),
    ] = "",
    output: Annotated[
        GetOutput | None,
        typer.Option("--output", "-o", help="yaml, json, wide or name.", show_default=False),
    ] = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """List objects of one kind, or show one; exit 1 when it is not there."""
    from gossamer.cli.resource_names import split_kind_name

    kind, name = split_kind_name(kind, name)
    if name is not None and all_namespaces:
        raise typer.BadParameter("an object cannot be named across all namespaces; use -n")
    if name is not None and selector:
        raise typer.BadParameter("give a name or a label selector, not both")
    scope = None if all_namespaces else namespace_or_default(namespace)
    with open_session(server, token) as session:
        served = session.resolve(kind)
        if name is not None:
            items = [session.client.get(served, namespace_or_default(namespace), name)]
        else:
            items = session.client.list(served, scope, selector)
    _print(served, items, output, scope, single=name is not None)


def _print(
    served: ServedResource,
    items: list[dict[str, Any]],
    output: GetOutput | None,
    scope: str | None,
    *,
    single: bool,
) -> None:
    from gossamer.cli.columns import table
    from gossamer.cli.resource_names import object_ref
    from gossamer.cli.served_objects import object_yaml

    document: Any = items[0] if single else {"apiVersion": "v1", "kind": "List", "items": items}
    if output is GetOutput.YAML:
        typer.echo(object_yaml(document), nl=False)
    elif output is GetOutput.JSON:
        typer.echo(json.dumps(document, indent=2))
    elif output is GetOutput.NAME:
        for item in items:
            typer.echo(object_ref(served, str(item["metadata"]["name"])))
    elif not items:
        where = f" in {scope} namespace" if scope else ""
        typer.echo(f"No resources found{where}.", err=True)
    else:
        now = datetime.now(UTC)
        wide = output is GetOutput.WIDE
        typer.echo(table(served.kind, items, namespaces=scope is None, wide=wide, now=now))
