"""`gossamer up | down | status | logs`: a whole mesh on this host from a folder of manifests."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from gossamer.runtime.local import LocalMesh

STATE_FOLDER = ".gossamer"


def up(
    path: Annotated[Path, typer.Argument(help="Folder (or file) of manifests.")],
    *,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Return once everything is ready.")
    ] = False,
    gateway_port: Annotated[
        int | None,
        typer.Option(
            help="Ingress gateway port; it must be free. Default: 8080, or any free port if taken.",
            show_default=False,
        ),
    ] = None,
    control_plane_port: Annotated[
        int | None,
        typer.Option(
            help="Control plane port; it must be free. Default: 15010, or any free port if taken.",
            show_default=False,
        ),
    ] = None,
    ready_timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness.")] = 60.0,
    vip_network: Annotated[
        str | None,
        typer.Option(
            help="Where Services' virtual IPs are allocated. Default: 127.77.0.0/16, or the "
            "next /16 of 127.0.0.0/8 when another mesh on this host listens there.",
            show_default=False,
        ),
    ] = None,
    dns_forward: Annotated[
        list[str] | None,
        typer.Option(help="Resolver IP:PORT for names outside the mesh (default: refuse them)."),
    ] = None,
    view: Annotated[
        bool, typer.Option(help="Show the live view (off when not a terminal).")
    ] = True,
    certificate_lifetime: Annotated[
        str,
        typer.Option(help="How long workload certificates are valid (60s at least); e.g. 24h, 5m."),
    ] = "24h",
    hpa_sync_period: Annotated[
        str,
        typer.Option(help="How often HorizontalPodAutoscalers are reconciled; e.g. 15s, 1s."),
    ] = "15s",
    instance_ttl: Annotated[
        str,
        typer.Option(
            help="How long the control plane keeps an instance whose sidecar is gone; e.g. 30s."
        ),
    ] = "30s",
) -> None:
    """Run the mesh the manifests describe: control plane, gateway, sidecars and apps."""
    from gossamer.resources.problems import Severity
    from gossamer.resources.validation import validate_paths

    path = path.resolve()
    if not path.exists():
        _fail(f"{path} does not exist")
    if vip_network is None:
        from gossamer.runtime.ports import free_vip_network

        vip_network = free_vip_network()
    try:
        if ipaddress.ip_network(vip_network).num_addresses < 4:
            raise ValueError("too small")
    except ValueError as error:
        raise typer.BadParameter(f"{vip_network}: {error}", param_hint="--vip-network") from None
    lifetime_s = _lifetime(certificate_lifetime)
    hpa_sync_s = _positive_duration(hpa_sync_period, "--hpa-sync-period")
    instance_ttl_s = _positive_duration(instance_ttl, "--instance-ttl")
    result = validate_paths([path])
    errors = [p for p in result.problems if p.severity is Severity.ERROR]
    if errors or not result.loaded.resources:
        for problem in errors:
            typer.echo(str(problem), err=True)
        _fail("nothing started: fix the manifests first" if errors else f"no manifests in {path}")
    state = state_folder(path)
    running = read_up_file(state)
    if running is not None and _alive(int(running.get("pid", 0))):
        _fail(f"a mesh from {path} is already up (PID {running['pid']}); `gossamer down` first")
    if detach:
        _detach(
            path,
            state,
            gateway_port,
            ready_timeout,
            vip_network,
            dns_forward or [],
            lifetime_s,
            control_plane_port,
            hpa_sync_s,
            instance_ttl_s,
        )
        return
    resources = [loaded.resource for loaded in result.loaded.resources]
    documents = [loaded.document.data for loaded in result.loaded.resources]
    code = asyncio.run(
        _run(
            path=path,
            state=state,
            resources=resources,
            documents=documents,
            gateway_port=gateway_port,
            control_plane_port=control_plane_port,
            ready_timeout=ready_timeout,
            view=view,
            vip_network=vip_network,
            dns_forward=tuple(dns_forward or ()),
            certificate_lifetime_s=lifetime_s,
            hpa_sync_s=hpa_sync_s,
            instance_ttl_s=instance_ttl_s,
        )
    )
    raise typer.Exit(code)


def _positive_duration(text: str, option: str) -> float:
    from gossamer.snapshot.durations import seconds

    try:
        period = seconds(text)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=option) from None
    if period <= 0:
        raise typer.BadParameter("must be more than 0s", param_hint=option)
    return period


def _lifetime(text: str) -> float:
    from gossamer.snapshot.durations import seconds

    minimum = 60.0  # the CA's own floor, checked here to fail before anything starts
    try:
        lifetime = seconds(text)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--certificate-lifetime") from None
    if lifetime < minimum:
        raise typer.BadParameter(
            f"must be at least {minimum:.0f}s", param_hint="--certificate-lifetime"
        )
    return lifetime


def down(
    path: Annotated[Path, typer.Argument(help="The folder `up` was given.")] = Path(),
    timeout: Annotated[float, typer.Option(help="Seconds to wait for everything to stop.")] = 60.0,
) -> None:
    """Stop a mesh started by `gossamer up`, in reverse order."""
    state = find_state(path.resolve())
    running = read_up_file(state) if state else None
    if state is None or running is None:
        _fail(f"no mesh is up here ({path.resolve()})")
    pid = int(running["pid"])
    if not _alive(pid):
        (state / "up.json").unlink(missing_ok=True)
        typer.echo("the mesh was not running (stale state removed)")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            _fail(f"the mesh (PID {pid}) did not stop within {timeout:.0f}s")
        time.sleep(0.1)
    typer.echo("mesh stopped")


def status(
    path: Annotated[Path, typer.Argument(help="The folder `up` was given.")] = Path(),
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
) -> None:
    """Each process of the mesh: kind, phase, readiness, restarts."""
    state = find_state(path.resolve())
    data = _read_json(state / "status.json") if state else None
    if state is None or data is None:
        _fail(f"no mesh state here ({path.resolve()}); run `gossamer up PATH`")
    running = read_up_file(state)
    up_now = running is not None and _alive(int(running.get("pid", 0)))
    if output == "json":
        typer.echo(json.dumps({**data, "up": up_now}, indent=2))
        return
    from rich.console import Console

    console = Console(highlight=False)
    console.print(status_table(data["processes"]))
    if data.get("services"):
        console.print(services_table(data["services"]))
    if data.get("jobs"):
        console.print(jobs_table(data["jobs"]))
    where = f"control plane {data['server']}"
    if data.get("gateway"):
        where += f", gateway {data['gateway']}"
    typer.echo(f"{'up' if up_now else 'down'}: {where}")


def logs(
    name: Annotated[str, typer.Argument(help="A process name, as `gossamer status` lists it.")],
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    path: Annotated[Path, typer.Option(help="The folder `up` was given.")] = Path(),
) -> None:
    """Print (and with -f, follow) one process's log."""
    state = find_state(path.resolve())
    if state is None:
        _fail(f"no mesh state here ({path.resolve()})")
    log = state / "logs" / f"{name}.log"
    if not log.exists():
        known = sorted(p.stem for p in (state / "logs").glob("*.log"))
        _fail(f"no log for {name!r}; known: {', '.join(known) or 'none'}")
    with log.open("rb") as file:
        sys.stdout.buffer.write(file.read())
        sys.stdout.flush()
        while follow:
            chunk = file.read()
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            else:
                time.sleep(0.2)


def state_folder(path: Path) -> Path:
    """Where a mesh from `path` keeps its state."""
    return (path if path.is_dir() else path.parent) / STATE_FOLDER


def find_state(start: Path) -> Path | None:
    """The state folder of `start` or of the nearest parent that has one."""
    for folder in (start, *start.parents):
        candidate = folder / STATE_FOLDER
        if (candidate / "status.json").exists() or (candidate / "up.json").exists():
            return candidate
    return None


def read_up_file(state: Path) -> dict[str, Any] | None:
    """What a running `up` wrote about itself."""
    return _read_json(state / "up.json")


def status_table(rows: list[dict[str, Any]]) -> Any:
    """The processes as a Rich table."""
    from rich.table import Table

    table = Table("NAME", "KIND", "STATUS", "READY", "RESTARTS", "PID", "NOTE", box=None)
    for row in rows:
        phase = row["phase"]
        shown = "CrashLoopBackOff" if phase == "Backoff" else phase
        table.add_row(
            row["name"],
            row["kind"],
            shown,
            "yes" if row["ready"] else "no",
            str(row["restarts"]),
            str(row["pid"] or ""),
            row["reason"] or row["lastExit"],
        )
    return table


def services_table(rows: list[dict[str, Any]]) -> Any:
    """Each service: replicas ready and requests per second."""
    from rich.table import Table

    table = Table("SERVICE", "READY", "REQ/S", box=None)
    for row in rows:
        table.add_row(row["name"], f"{row['ready']}/{row['replicas']}", f"{row['rps']:.1f}")
    return table


def jobs_table(rows: list[dict[str, Any]]) -> Any:
    """Each Job as `kubectl get jobs` shows it: its state and completions."""
    from rich.table import Table

    table = Table("JOB", "STATUS", "COMPLETIONS", "FAILED", box=None)
    for row in rows:
        name = row["name"] if row["namespace"] == "default" else f"{row['namespace']}.{row['name']}"
        completions = f"{row['succeeded']}/{row['completions']}"
        table.add_row(name, row["status"], completions, str(row["failed"]))
    return table


async def _run(
    *,
    path: Path,
    state: Path,
    resources: list[Any],
    documents: list[Any],
    gateway_port: int | None,
    control_plane_port: int | None,
    ready_timeout: float,
    view: bool,
    vip_network: str,
    dns_forward: tuple[str, ...],
    certificate_lifetime_s: float,
    hpa_sync_s: float,
    instance_ttl_s: float,
) -> int:
    from gossamer.runtime.local import LocalMesh, LocalMeshConfig
    from gossamer.runtime.plan import PlanError, plan_mesh
    from gossamer.runtime.ports import PortInUseError, Ports

    ports = Ports()
    try:
        for port in (gateway_port, control_plane_port):
            if port is not None:
                ports.check_free(port)
        plan = plan_mesh(
            resources,
            ports,
            gateway_port or 8080,
            vip_network,
            dns_forward,
            control_plane_port=control_plane_port or 15010,
        )
    except (PlanError, PortInUseError) as error:
        typer.echo(f"error: {error}", err=True)
        return 1
    config = LocalMeshConfig(
        source=path,
        state=state,
        certificate_lifetime_s=certificate_lifetime_s,
        hpa_sync_s=hpa_sync_s,
        instance_ttl_s=instance_ttl_s,
    )
    mesh = LocalMesh(config, plan, resources, documents, ports)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    started = time.monotonic()
    viewer = loop.create_task(_live(mesh, stop)) if view and sys.stdout.isatty() else None
    try:
        starting = loop.create_task(mesh.start(ready_timeout))
        stopping = loop.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()
            _ready(mesh, time.monotonic() - started)
            await stopping
        else:
            starting.cancel()
    except Exception as error:  # any failure to start is reported, then everything stops
        typer.echo(f"error: {error}", err=True)
        await mesh.stop()
        return 1
    finally:
        if viewer is not None:
            viewer.cancel()
    typer.echo("stopping...")
    await mesh.stop()
    typer.echo("stopped")
    return 0


def _ready(mesh: LocalMesh, seconds: float) -> None:
    typer.echo(f"mesh ready in {seconds:.1f}s: {len(mesh.statuses())} processes")
    typer.echo(f"  control plane: {mesh.url}")
    typer.echo(_dashboard_line(mesh.url, str(mesh.admin_token_file)))
    notes = _notes(mesh.workdir, mesh.gateway_url)
    if notes:
        typer.echo(notes)
    elif mesh.gateway_url:
        typer.echo(f"  try: curl {mesh.gateway_url}/")
    typer.echo("  gossamer status | gossamer logs NAME | gossamer down")


def _dashboard_line(server: str, token_file: str) -> str:
    """Where the dashboard is and how to log in: the token's file, never the token, since this
    output lands in terminals and logs."""
    return (
        f"  dashboard: {server}/dashboard/ (`gossamer dashboard` prints a one-time login link; "
        f"or paste the admin token: `cat {token_file}`)"
    )


def _notes(folder: Path, gateway: str | None) -> str | None:
    """The folder's NOTES.txt (what to try, as a Helm chart's notes say), with `{gateway}` (its
    URL) and `{gateway_port}` filled in; None when there is none."""
    path = folder / "NOTES.txt"
    if gateway is None or not path.is_file():
        return None
    port = gateway.rsplit(":", 1)[-1]
    text = path.read_text(errors="replace").rstrip()
    return text.replace("{gateway}", gateway).replace("{gateway_port}", port)


async def _live(mesh: LocalMesh, stop: asyncio.Event) -> None:
    from rich.console import Group
    from rich.live import Live

    from gossamer.runtime.summary import status_row

    with Live(refresh_per_second=4, transient=False) as live:
        while not stop.is_set():
            rows = [status_row(s, mesh.kinds.get(s.name, "")) for s in mesh.statuses()]
            live.update(Group(status_table(rows), services_table(mesh.services_summary())))
            await asyncio.sleep(0.25)


def _detach(  # noqa: PLR0917 - the options of `up`, passed on to the background `up`
    path: Path,
    state: Path,
    gateway_port: int | None,
    ready_timeout: float,
    vip_network: str,
    dns_forward: list[str],
    certificate_lifetime_s: float,
    control_plane_port: int | None,
    hpa_sync_s: float,
    instance_ttl_s: float,
) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / "up.json").unlink(missing_ok=True)
    argv = [sys.executable, "-m", "gossamer", "up", str(path), "--no-view"]
    argv += ["--ready-timeout", str(ready_timeout), "--vip-network", vip_network]
    argv += ["--certificate-lifetime", f"{certificate_lifetime_s:g}s"]
    argv += ["--hpa-sync-period", f"{hpa_sync_s:g}s", "--instance-ttl", f"{instance_ttl_s:g}s"]
    for forwarder in dns_forward:
        argv += ["--dns-forward", forwarder]
    if gateway_port is not None:
        argv += ["--gateway-port", str(gateway_port)]
    if control_plane_port is not None:
        argv += ["--control-plane-port", str(control_plane_port)]
    with (state / "up.log").open("ab") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + ready_timeout + 30
    while time.monotonic() < deadline:
        running = read_up_file(state)
        if running is not None and running.get("ready"):
            typer.echo(f"mesh up (PID {process.pid}): control plane {running['server']}")
            typer.echo(_dashboard_line(running["server"], running["token_file"]))
            folder = path if path.is_dir() else path.parent
            notes = _notes(folder, running.get("gateway"))
            if notes:
                typer.echo(notes)
            elif running.get("gateway"):
                typer.echo(f"  try: curl {running['gateway']}/")
            return
        if process.poll() is not None:
            tail = (state / "up.log").read_text(errors="replace").splitlines()[-15:]
            typer.echo("\n".join(tail), err=True)
            _fail(f"the mesh failed to start (see {state / 'up.log'})")
        time.sleep(0.1)
    process.terminate()
    _fail(f"the mesh was not ready within {ready_timeout:.0f}s (see {state / 'up.log'})")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is gone for our purpose.
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] != "Z"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)
