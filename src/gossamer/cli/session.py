"""What the client commands share: options that find the control plane, and errors as kubectl
prints them (`Error from server (NotFound): ...`), each ending the command with exit code 1."""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from gossamer.cli.resource_names import ResourceNames
    from gossamer.control.api.catalog import ServedResource
    from gossamer.control.client import ApiClient, StatusError
    from gossamer.control.connection import Connection

DEFAULT_NAMESPACE = "default"
ACCESS_DENIED = (401, 403)
"""Refusals of the token rather than of one object: commands stop at the first."""

Server = Annotated[
    str | None,
    typer.Option(
        "--server",
        "-s",
        help="Control plane URL (default: $GOSSAMER_SERVER, then a running `gossamer up`, "
        "then https://127.0.0.1:15010); an https server is verified with $GOSSAMER_CA_FILE "
        "or the mesh's trust bundle.",
        show_default=False,
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="Bearer token (default: $GOSSAMER_TOKEN, then the token of `gossamer up`, then "
        ".gossamer/control-plane/admin-token).",
        show_default=False,
    ),
]
Namespace = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="Namespace (default: default).", show_default=False),
]
AllNamespaces = Annotated[
    bool, typer.Option("--all-namespaces", "-A", help="Every namespace.", show_default=False)
]


@dataclass(frozen=True, slots=True)
class Session:
    """An open client, the names of kinds, and where the server and token came from."""

    connection: Connection
    client: ApiClient
    names: ResourceNames

    def resolve(self, kind: str) -> ServedResource:
        """The resource a command-line kind names; an unknown one ends the command."""
        from gossamer.cli.resource_names import UnknownResourceError

        try:
            return self.names.resolve(kind)
        except UnknownResourceError as error:
            fail(str(error))

    def report(self, error: StatusError, context: str = "") -> None:
        """Print a refusal as kubectl does, after `context` (what was being done) if given;
        when the token was refused, say where it came from."""
        message = f"{context}: {error.message}" if context else error.message
        if error.code in (401, 403):
            connection = self.connection
            origin = connection.token_origin
            message += f" (token {origin})" if connection.token else f" (token: {origin})"
        typer.echo(f"Error from server ({error.reason}): {message}", err=True)


@contextlib.contextmanager
def open_session(server: str | None, token: str | None) -> Iterator[Session]:
    """A session with the control plane the options, environment or defaults name.

    A refusal the command does not handle itself, or a server that does not answer, is printed
    and ends the command with exit code 1.
    """
    from gossamer.cli.resource_names import ResourceNames
    from gossamer.control.client import (
        ApiClient,
        StatusError,
        UnreachableError,
        UntrustedServerError,
    )
    from gossamer.control.connection import ConnectionSettingsError, resolve_connection

    try:
        connection = resolve_connection(server, token, os.environ, Path.cwd())
    except ConnectionSettingsError as error:
        fail(str(error))
    ca_file = str(connection.ca_file) if connection.ca_file is not None else None
    try:
        client = ApiClient(connection.server, connection.token, ca_file=ca_file)
    except (OSError, ssl.SSLError) as error:
        fail(f"cannot use the CA file {ca_file}: {getattr(error, 'strerror', None) or error}")
    session = Session(connection, client, ResourceNames(client.catalog))
    try:
        yield session
    except StatusError as error:
        session.report(error)
        raise typer.Exit(1) from None
    except UntrustedServerError as error:
        origin = f"; roots {connection.ca_origin}" if connection.ca_origin else ""
        fail(f"refusing the control plane ({connection.server_origin}{origin}): {error.cause}")
    except UnreachableError as error:
        where = f"{connection.server} ({connection.server_origin})"
        if error.timed_out:
            fail(f"the control plane at {where} did not answer in time: {error.cause}")
        fail(f"no control plane at {where}")
    finally:
        client.close()


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: MESSAGE` on stderr and end the command."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def namespace_or_default(namespace: str | None) -> str:
    """The namespace a command works in."""
    return namespace or DEFAULT_NAMESPACE
