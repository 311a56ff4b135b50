"""`gossamer control-plane`: run the store and the resource API until Ctrl-C or SIGTERM."""

from __future__ import annotations

import dataclasses
import gc
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from gossamer.control.server import ControlPlane


def control_plane(
    *,
    store: Annotated[
        str | None,
        typer.Option(
            help="sqlite:FILE or etcd://HOST:PORT, optionally etcd://HOST:PORT/PREFIX "
            "(default: sqlite in the state folder).",
            show_default=False,
        ),
    ] = None,
    listen: Annotated[
        str, typer.Option(help="HOST:PORT of the API; port 0 picks a free one.")
    ] = "127.0.0.1:15010",
    state: Annotated[
        Path,
        typer.Option(help="Folder of the admin token (and of the sqlite store by default)."),
    ] = Path(".gossamer/control-plane"),
    tls: Annotated[
        bool,
        typer.Option(
            "--tls/--insecure-http",
            help="Serve the API over HTTPS with a certificate from the mesh CA (the default); "
            "clients verify it with STATE/ca/trust-bundle.pem (GOSSAMER_CA_FILE, --ca-file). "
            "--insecure-http is for development only: whoever holds the port gets every token.",
        ),
    ] = True,
    server_name: Annotated[
        list[str] | None,
        typer.Option(
            "--server-name",
            help="Another DNS name or address the API certificate is valid for, for clients "
            "on other hosts (repeat for several).",
            show_default=False,
        ),
    ] = None,
    mtls: Annotated[
        bool,
        typer.Option(
            "--mtls/--no-mtls",
            help="Run the mesh CA: sidecars get SPIFFE certificates and talk mTLS to each other.",
        ),
    ] = True,
    certificate_lifetime: Annotated[
        str,
        typer.Option(help="How long workload certificates are valid (60s at least); e.g. 24h, 5m."),
    ] = "24h",
    instance_ttl: Annotated[
        str,
        typer.Option(
            help="How long the registry keeps an instance whose proxy is gone (or whose "
            "replica's lease lapsed) before removing it; e.g. 30s, 2m."
        ),
    ] = "30s",
) -> None:
    """Run the control plane: the resource store and its API with watches."""
    # Imported here so that other commands (the proxy above all) do not load the control plane.
    from gossamer.control.auth import TokenFileError
    from gossamer.control.server import ControlPlaneConfig, configure_logging, serve
    from gossamer.control.store.errors import StoreError
    from gossamer.security.ca import MIN_LIFETIME_S
    from gossamer.snapshot.durations import seconds

    try:
        config = ControlPlaneConfig.from_options(
            state, store, listen, tls=tls, server_names=tuple(server_name or ())
        )
        lifetime = seconds(certificate_lifetime)
        if lifetime < MIN_LIFETIME_S:
            raise ValueError(f"--certificate-lifetime must be at least {MIN_LIFETIME_S:.0f}s")
        ttl = seconds(instance_ttl)
        if ttl <= 0:
            raise ValueError("--instance-ttl must be more than 0s")
        mesh = dataclasses.replace(
            config.mesh, mtls=mtls, certificate_lifetime_s=lifetime, instance_ttl_s=ttl
        )
        config = dataclasses.replace(config, mesh=mesh)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    configure_logging()
    if not tls:
        typer.echo(
            "warning: serving plain HTTP (--insecure-http): clients cannot tell this control "
            "plane from any process that takes its port, and tokens cross the wire in clear",
            err=True,
        )

    def ready(plane: ControlPlane) -> None:
        # The whole store and the first views, read by now, live until they change: out of
        # the collector's sight, a full collection no longer walks them (with 5,000 services,
        # a pause of 0.1 to 0.3 s each time while the proxies reconnect after a restart).
        # What replaces them later is collected as usual.
        gc.collect()
        gc.freeze()
        sys.stdout.write(
            f"gossamer control-plane: listening on {plane.url} "
            f"(store {config.store_location}, admin token in {plane.token_file}"
            + (f", trust bundle in {plane.ca_file}" if tls else "")
            + ")\n"
        )
        sys.stdout.flush()

    try:
        # uvloop: its TLS is native code, and every proxy's stream is TLS.
        import uvloop

        uvloop.run(serve(config, ready))
    except (StoreError, TokenFileError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    except OSError as error:
        typer.echo(f"error: cannot listen on {listen}: {error.strerror or error}", err=True)
        raise typer.Exit(1) from None
