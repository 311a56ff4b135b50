"""`gossamer dns`: the mesh DNS, answering Services' names with their virtual IPs."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer


def dns(
    *,
    control_plane: Annotated[str, typer.Option(help="Control-plane URL to read Services from.")],
    token_file: Annotated[Path, typer.Option(help="File holding a token for the control plane.")],
    listen: Annotated[str, typer.Option(help="HOST:PORT for UDP and TCP.")] = "127.0.0.1:15053",
    vip_network: Annotated[str, typer.Option(help="Where Services' virtual IPs are.")] = (
        "127.77.0.0/16"
    ),
    forward: Annotated[
        list[str] | None,
        typer.Option(help="Resolver (IP:PORT) for names outside the mesh; none: refuse them."),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(help="PEM roots an https control plane is verified with (trust-bundle.pem)."),
    ] = None,
) -> None:
    """Serve the mesh DNS: A, AAAA and SRV for svc, svc.ns and svc.ns.svc.cluster.local."""
    from gossamer.discovery.directory import MemoryDirectory
    from gossamer.discovery.follow import ControlPlaneFollower
    from gossamer.discovery.resolver import DnsConfig
    from gossamer.discovery.server import DnsServer

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter("expected HOST:PORT", param_hint="--listen")
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise typer.BadParameter(f"{token_file}: {error.strerror}") from None

    async def serve() -> None:
        directory = MemoryDirectory()
        server = DnsServer(
            directory, DnsConfig(forwarders=tuple(forward or ())), address=host, port=int(port)
        )
        follower = ControlPlaneFollower(
            directory, control_plane, token, vip_network=vip_network, ca_file=ca_file
        )
        await server.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, stop.set)
        following = loop.create_task(follower.run())
        sys.stdout.write(f"gossamer dns: answering on {host}:{server.port} (UDP and TCP)\n")
        sys.stdout.flush()
        await stop.wait()
        following.cancel()
        await server.close()

    try:
        asyncio.run(serve())
    except OSError as error:
        typer.echo(f"error: cannot serve DNS on {listen}: {error.strerror or error}", err=True)
        raise typer.Exit(1) from None
