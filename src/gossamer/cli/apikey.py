"""`gossamer apikey create|list|revoke`: the API keys of ApiProduct consumers."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from gossamer.cli.mesh import call_api
from gossamer.cli.session import Namespace, Server, Token, fail, namespace_or_default

apikey_app = typer.Typer(
    help="API keys of ApiProduct consumers: the store keeps their SHA-256 only.",
    no_args_is_help=True,
)

Duration = Annotated[
    str | None,
    typer.Option(help="A duration such as 90s, 12h or 30d.", show_default=False),
]


@apikey_app.command("create")
def create_key(
    product: Annotated[str, typer.Argument(help="The ApiProduct.")],
    *,
    consumer: Annotated[str, typer.Option("--consumer", "-c", help="Its consumer.")],
    expires_in: Duration = None,
    namespace: Namespace = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Issue a key for CONSUMER of PRODUCT; the key is printed once and never stored."""
    body: dict[str, Any] = {"product": product, "consumer": consumer}
    if expires_in is not None:
        body["expiresIn"] = _seconds(expires_in)
    space = namespace_or_default(namespace)
    created = call_api(server, token, "POST", f"/apikeys/v1/namespaces/{space}/keys", body)
    typer.echo(created["key"])
    typer.echo(f"key {created['name']} for {consumer} of {space}/{product}", err=True)


@apikey_app.command("list")
def list_keys(
    product: Annotated[str | None, typer.Argument(help="Only this ApiProduct's.")] = None,
    namespace: Namespace = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """The keys issued in a namespace: name, product, consumer, state, end."""
    space = namespace_or_default(namespace)
    query = f"?product={product}" if product else ""
    items = call_api(server, token, "GET", f"/apikeys/v1/namespaces/{space}/keys{query}")["items"]
    rows = [("NAME", "PRODUCT", "CONSUMER", "STATE", "CREATED", "ENDS")]
    for item in items:
        ends = item.get("expiresAt")
        rows.append(
            (
                item["name"],
                item["product"],
                item["consumer"],
                item["state"],
                item["created"],
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ends)) if ends else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


@apikey_app.command("revoke")
def revoke_key(
    name: Annotated[str, typer.Argument(help="The key's name (from `gossamer apikey list`).")],
    after: Duration = None,
    namespace: Namespace = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Refuse a key from now on, or --after a while (a rotation's overlap)."""
    space = namespace_or_default(namespace)
    body = {"after": _seconds(after) if after is not None else 0}
    revoked = call_api(
        server, token, "POST", f"/apikeys/v1/namespaces/{space}/keys/{name}/revoke", body
    )
    ends = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(revoked["expiresAt"]))
    typer.echo(f"key {name} ends at {ends}")


def _seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:]
    try:
        value = float(number) * units[unit]
    except (KeyError, ValueError):
        fail(f"not a duration: {text} (write 90s, 15m, 12h or 30d)")
    return value
