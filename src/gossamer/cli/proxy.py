"""`gossamer proxy`: run one proxy (sidecar or gateway) from a snapshot file or a control plane."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer


def proxy(
    *,
    bootstrap: Annotated[
        Path | None,
        typer.Option(
            "--bootstrap",
            "-b",
            exists=True,
            dir_okay=False,
            help="Snapshot file (.json or .yaml). Re-read on SIGHUP and when it changes.",
        ),
    ] = None,
    control_plane: Annotated[
        str | None,
        typer.Option(
            help="Control-plane URL (several, comma-separated, for replicas): take snapshots "
            "from its stream instead of a file."
        ),
    ] = None,
    workload: Annotated[str, typer.Option(help="The Deployment this proxy serves.")] = "",
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
    token: Annotated[
        str, typer.Option(envvar="GOSSAMER_TOKEN", help="The workload's bearer token.")
    ] = "",
    token_file: Annotated[Path | None, typer.Option(help="File holding the token.")] = None,
    service_account: Annotated[
        str, typer.Option(help="The workload's service account: its SPIFFE identity.")
    ] = "default",
    ca_file: Annotated[
        Path | None, typer.Option(help="PEM roots to verify an https control plane with.")
    ] = None,
    role: Annotated[str, typer.Option(help="sidecar or gateway.")] = "sidecar",
    address: Annotated[
        str, typer.Option(help="Where the inbound (or gateway) listener binds and is reached.")
    ] = "127.0.0.1",
    inbound_port: Annotated[int, typer.Option()] = 15006,
    outbound_port: Annotated[int, typer.Option()] = 15001,
    gateway_port: Annotated[int, typer.Option()] = 8080,
    app_port: Annotated[
        int, typer.Option(help="Where the app listens (every service port); 0: targetPorts.")
    ] = 0,
    tcp_port: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME=PORT",
            help="Take the opaque TCP Service port NAME on PORT (repeatable; a sidecar).",
        ),
    ] = None,
    zone: Annotated[str, typer.Option(help="Locality of this instance.")] = "",
    ready_url: Annotated[
        str | None, typer.Option(help="The app's readiness URL; ready once configured if unset.")
    ] = None,
    admin: Annotated[
        str, typer.Option(help="Admin endpoint address, HOST:PORT (port 0 picks a free one).")
    ] = "127.0.0.1:15000",
    drain_timeout: Annotated[
        float, typer.Option(help="Seconds to finish requests in flight on SIGTERM.")
    ] = 10.0,
    ready_file: Annotated[
        Path | None,
        typer.Option(help="Write the bound ports here once serving (for supervisors and tests)."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Run this many proxies sharing the listening ports (SO_REUSEPORT); worker 0 "
            "keeps --admin, the others take free admin ports.",
        ),
    ] = 1,
) -> None:
    """Run a proxy until SIGTERM, then drain gracefully."""
    host, _, port = admin.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter("expected HOST:PORT", param_hint="--admin")
    if (bootstrap is None) == (control_plane is None):
        raise typer.BadParameter("give either --bootstrap FILE or --control-plane URL")
    # The proxy replaces this process (same PID, same signals) so that it carries none of the
    # command line's modules: a sidecar's memory is its own.
    argv = [sys.executable, "-m", "gossamer.proxy.runner"]
    if bootstrap is not None:
        argv += ["--bootstrap", str(bootstrap)]
    else:
        assert control_plane is not None
        if not workload:
            raise typer.BadParameter("--control-plane needs --workload")
        if not token and token_file is None:
            raise typer.BadParameter(
                "--control-plane needs --token, --token-file or GOSSAMER_TOKEN"
            )
        argv += ["--control-plane", control_plane, "--workload", workload]
        argv += ["--namespace", namespace, "--role", role, "--address", address]
        argv += ["--inbound-port", str(inbound_port), "--outbound-port", str(outbound_port)]
        argv += ["--gateway-port", str(gateway_port), "--zone", zone, "--app-port", str(app_port)]
        argv += ["--service-account", service_account]
        for named in tcp_port or ():
            argv += ["--tcp-port", named]
        if ca_file is not None:
            argv += ["--ca-file", str(ca_file)]
        # The token travels in the environment, not the command line that `ps` shows.
        if token:
            os.environ["GOSSAMER_TOKEN"] = token
        if token_file is not None:
            argv += ["--token-file", str(token_file)]
        if ready_url:
            argv += ["--ready-url", ready_url]
    argv += ["--admin", admin, "--drain-timeout", str(drain_timeout)]
    if ready_file is not None:
        argv += ["--ready-file", str(ready_file)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    sys.stdout.flush()
    os.execv(sys.executable, argv)
