"""`gossamer proxy`: run one proxy (sidecar or gateway) from a snapshot file."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer


def proxy(
    bootstrap: Annotated[
        Path,
        typer.Option(
            "--bootstrap",
            "-b",
            exists=True,
            dir_okay=False,
            help="Snapshot file (.json or .yaml). Re-read on SIGHUP and when it changes.",
        ),
    ],
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
) -> None:
    """Run a proxy from a snapshot file until SIGTERM, then drain gracefully."""
    host, _, port = admin.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter("expected HOST:PORT", param_hint="--admin")
    # The proxy replaces this process (same PID, same signals) so that it carries none of the
    # command line's modules: a sidecar's memory is its own.
    argv = [sys.executable, "-m", "gossamer.proxy.runner", "--bootstrap", str(bootstrap)]
    argv += ["--admin", admin, "--drain-timeout", str(drain_timeout)]
    if ready_file is not None:
        argv += ["--ready-file", str(ready_file)]
    sys.stdout.flush()
    os.execv(sys.executable, argv)
