"""`gossamer proxy-status` and `gossamer token create`: the proxies' side of the control plane."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from gossamer.cli.session import Namespace, Server, Token, fail, namespace_or_default


def proxy_status(
    server: Server = None,
    token: Token = None,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
) -> None:
    """Each connected proxy: SYNCED, STALE or NACKED, the version it runs, the last error."""
    items = call_api(server, token, "GET", "/debug/v1/proxies")["items"]
    if output == "json":
        typer.echo(json.dumps(items, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "NAME",
        "WORKLOAD",
        "ROLE",
        "STATE",
        "VERSION",
        "ACKED",
        "CERTIFICATE",
        "CONTROL PLANE",
        "ERROR",
        box=None,
    )
    for item in items:
        table.add_row(
            item["proxy"],
            f"{item['workload']}.{item['namespace']}",
            item["role"],
            item["state"],
            item["sent"],
            item["acked"],
            _certificate(item),
            item["controlPlane"],
            item["error"],
        )
    Console(highlight=False, soft_wrap=True).print(table)
    if not items:
        typer.echo("no proxy is connected")


def _certificate(item: dict[str, Any]) -> str:
    """How long the proxy's certificate has left, e.g. `23h59m`; `-` without one."""
    from gossamer.cli.columns import time_left

    expiry = float(item.get("certificateExpiry") or 0)
    return time_left(expiry, time.time()) if expiry else "-"


token_app = typer.Typer(help="Workload tokens: what a proxy shows the control plane.")


@token_app.command("create")
def create_token(
    workload: Annotated[str, typer.Argument(help="The Deployment (or gateway) the token is for.")],
    namespace: Namespace = None,
    server: Server = None,
    token: Token = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="Write the token here (mode 0600) instead.")
    ] = None,
) -> None:
    """Mint a token that opens WORKLOAD's config stream and nothing else."""
    space = namespace_or_default(namespace)
    minted = call_api(
        server,
        token,
        "POST",
        f"/auth/v1/namespaces/{space}/workloadtokens",
        {"workload": workload},
    )
    if file is None:
        typer.echo(minted["token"])
        return
    descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(minted["token"] + "\n")
    typer.echo(f"token for {space}/{workload} written to {file}")


def call_api(
    server: str | None,
    token: str | None,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One request to the control plane the options name; a refusal ends the command."""
    import httpx

    from gossamer.control.connection import ConnectionSettingsError, resolve_connection

    try:
        connection = resolve_connection(server, token, os.environ, Path.cwd())
    except ConnectionSettingsError as error:
        fail(str(error))
    from gossamer.security.trust import client_context, describe_failure, tls_failure

    headers = {"Authorization": f"Bearer {connection.token}"} if connection.token else {}
    try:
        response = httpx.request(
            method,
            connection.server + path,
            json=body,
            headers=headers,
            timeout=10.0,
            verify=client_context(connection.ca_file),
        )
    except httpx.HTTPError as error:
        failure = tls_failure(error)
        if failure is not None:
            cause = describe_failure(failure, connection.server, connection.ca_file)
            fail(f"refusing the control plane ({connection.server_origin}): {cause}")
        fail(f"no control plane at {connection.server} ({connection.server_origin})")
    if response.is_error:
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        fail(f"{response.status_code}: {message} (token {connection.token_origin})")
    answer: dict[str, Any] = response.json()
    return answer
