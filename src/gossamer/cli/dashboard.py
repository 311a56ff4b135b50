"""`gossamer dashboard`: where the control plane's web dashboard is, and a one-time login link."""

from __future__ import annotations

import os
import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from gossamer.cli.mesh import call_api
from gossamer.cli.session import Server, Token


def dashboard(
    *,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the login link in the default browser.")
    ] = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """Print the dashboard's URL and a one-time login link (valid 60 s, for one browser tab).

    The link carries a single-use code in its fragment, which browsers never send to a server;
    the page trades it for a read-only session token that lasts 8 h. The admin token itself is
    never put in a URL.
    """
    from gossamer.control.connection import resolve_connection

    minted = call_api(server, token, "POST", "/dashboard/v1/logins")
    base = resolve_connection(server, token, os.environ, Path.cwd()).server
    link = base + str(minted["path"])
    typer.echo(f"dashboard: {base}/dashboard/")
    seconds = float(minted.get("expiresInSeconds", 60))
    typer.echo(f"one-time login link (valid {seconds:.0f} s, for one browser tab): {link}")
    if base.startswith("https://"):
        typer.echo(
            "the page is served with the mesh CA's certificate: import the trust bundle "
            "(.gossamer/control-plane/ca/trust-bundle.pem) into the browser, or accept it once"
        )
    if open_browser:
        webbrowser.open(link)
