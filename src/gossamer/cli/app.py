"""The `gossamer` command: one Typer app, one module per command group."""

from __future__ import annotations

from typing import Annotated

import typer

from gossamer import __version__
from gossamer.cli.control import control_plane
from gossamer.cli.events import events_app
from gossamer.cli.proxy import proxy
from gossamer.cli.validate import validate

app = typer.Typer(
    name="gossamer",
    help="Gossamer: a service mesh from the Kubernetes and Istio YAML you already have.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(validate)
app.add_typer(events_app, name="events")
app.command()(proxy)
app.command("control-plane")(control_plane)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"gossamer {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Gossamer: a service mesh from the Kubernetes and Istio YAML you already have."""


def main() -> None:
    """Entry point of the `gossamer` console script."""
    app()
