"""The `gossamer` command: one Typer app, one module per command group."""

from __future__ import annotations

from typing import Annotated

import typer

from gossamer import __version__
from gossamer.cli.analyze import analyze
from gossamer.cli.apikey import apikey_app
from gossamer.cli.apply import apply
from gossamer.cli.control import control_plane
from gossamer.cli.dashboard import dashboard
from gossamer.cli.delete import delete
from gossamer.cli.describe import describe
from gossamer.cli.dns import dns
from gossamer.cli.events import events_app
from gossamer.cli.get import get
from gossamer.cli.mesh import proxy_status, token_app
from gossamer.cli.observe import edges, stat, tap, top, trace
from gossamer.cli.prometheus import prometheus_config_command
from gossamer.cli.proxy import proxy
from gossamer.cli.up import down, logs, status, up
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
app.command()(up)
app.command()(dns)
app.command("proxy-status")(proxy_status)
app.command("prometheus-config")(prometheus_config_command)
app.add_typer(token_app, name="token")
app.add_typer(apikey_app, name="apikey")
app.command()(down)
app.command()(status)
app.command()(logs)
app.command()(apply)
app.command()(get)
app.command()(delete)
app.command()(describe)
app.command()(analyze)
app.command()(stat)
app.command()(edges)
app.command()(top)
app.command()(tap)
app.command()(trace)
app.command()(dashboard)


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
