"""Run one proxy: from a snapshot file (reload on SIGHUP or a change) or from a control plane.

Either way SIGTERM (or POST /drain on the admin port) drains it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import uvloop

from gossamer.proxy import native
from gossamer.proxy.admin import AdminServer
from gossamer.proxy.memory import release_free_memory
from gossamer.proxy.server import Proxy
from gossamer.snapshot import SnapshotError, load
from gossamer.snapshot.protocol import Hello, Instance

if TYPE_CHECKING:
    # A proxy run from a file never loads the agent (websockets): 2.5 MB less per process.
    from gossamer.proxy.agent import AgentOptions, ControlPlaneAgent

log = logging.getLogger("gossamer.proxy")

# How often the bootstrap file's modification time is checked.
WATCH_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How `gossamer proxy` was asked to run."""

    bootstrap: Path | None
    admin_address: str = "127.0.0.1"
    admin_port: int = 15000
    drain_timeout: float = 10.0
    ready_file: Path | None = None
    agent: AgentOptions | None = None
    """Set: the snapshot comes from a control plane instead of `bootstrap`."""
    identity: tuple[Path, Path, str] | None = None
    """(certificate chain, key, SPIFFE id) for mesh mTLS of a bootstrap-file proxy; a proxy
    on a control plane gets its certificate from the mesh CA instead."""
    workers: int = 1
    """More than 1: this process starts that many proxies sharing the listening ports
    (gossamer.proxy.workers) instead of serving itself."""


async def run(options: RunOptions) -> int:
    """Serve until SIGTERM/SIGINT or POST /drain; return the exit code."""
    proxy = Proxy()
    if options.bootstrap is not None:
        try:
            if options.identity is not None:
                cert, key, spiffe = options.identity
                proxy.set_identity(str(cert), str(key), spiffe)
            await proxy.apply(load(options.bootstrap))
        except (SnapshotError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    stop = asyncio.Event()
    admin = AdminServer(proxy, on_drain=stop.set)
    await admin.start(options.admin_address, options.admin_port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Task[None]] = []
    if options.agent is not None:
        from gossamer.proxy.agent import ControlPlaneAgent  # noqa: PLC0415

        agent = ControlPlaneAgent(proxy, _announcing_admin(options.agent, options, admin.port))
        tasks.append(loop.create_task(agent.run()))
        tasks.append(loop.create_task(_announce(proxy, agent, admin, options)))
    else:
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_reload(proxy, options)))
        tasks.append(loop.create_task(_watch(proxy, options)))
        _serving(proxy, admin, options)
    await stop.wait()
    log.info("draining (at most %.1fs)", options.drain_timeout)
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await proxy.drain(options.drain_timeout)
    await admin.close()
    return 0


def _announcing_admin(agent: AgentOptions, options: RunOptions, port: int) -> AgentOptions:
    """The agent's hello with the admin endpoint as bound (port 0 is known only now), so that
    the control plane can list it as a scrape target; an admin on every interface is announced
    at the proxy's own address."""
    host = options.admin_address
    if host in ("", "0.0.0.0", "::"):
        host = agent.hello.address
    admin = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return replace(agent, hello=msgspec.structs.replace(agent.hello, admin=admin))


async def _announce(
    proxy: Proxy, agent: ControlPlaneAgent, admin: AdminServer, options: RunOptions
) -> None:
    await agent.configured.wait()
    _serving(proxy, admin, options)


def _serving(proxy: Proxy, admin: AdminServer, options: RunOptions) -> None:
    # Starting up left free memory all through the heap: give it back before traffic comes.
    release_free_memory()
    bound = [(n, h.config.address, h.port) for n, h in proxy.listeners.items()]
    bound += [(n, h.config.address, h.port) for n, h in proxy.tcp.handles.items()]
    ports = ", ".join(f"{name}={address}:{port}" for name, address, port in bound)
    hot_path = native.describe()
    log.info(
        "serving snapshot %s: %s; admin on %s; hot path %s",
        _version(proxy),
        ports,
        admin.port,
        hot_path,
    )
    if options.ready_file is not None:
        options.ready_file.write_text(
            "\n".join(f"{name} {port}" for name, _, port in bound) + f"\nadmin {admin.port}\n"
        )


async def _reload(proxy: Proxy, options: RunOptions) -> None:
    assert options.bootstrap is not None
    try:
        snapshot = load(options.bootstrap)
        await proxy.apply(snapshot)
    except (SnapshotError, OSError) as error:
        proxy.stats.incr("gossamer_snapshot_rejected_total")
        log.error("kept snapshot %s; the new one was rejected: %s", _version(proxy), error)
        return
    log.info("applied snapshot %s", snapshot.version)


async def _watch(proxy: Proxy, options: RunOptions) -> None:
    bootstrap = options.bootstrap
    assert bootstrap is not None

    def stamp() -> float:
        try:
            return bootstrap.stat().st_mtime
        except OSError:
            return 0.0

    seen = stamp()
    while True:
        await asyncio.sleep(WATCH_INTERVAL)
        now = stamp()
        if now != seen:
            seen = now
            await _reload(proxy, options)


def _version(proxy: Proxy) -> str:
    return proxy.snapshot.version if proxy.snapshot is not None else "none"


def main(options: RunOptions) -> int:
    """Run the proxy on uvloop."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return uvloop.run(run(options))


def _parse(argv: list[str]) -> RunOptions:
    parser = argparse.ArgumentParser(prog="gossamer proxy", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bootstrap", type=Path)
    source.add_argument("--control-plane", help="URL[,URL...] of control-plane replicas")
    parser.add_argument("--cert-chain", type=Path, help="bootstrap: mesh certificate chain (PEM)")
    parser.add_argument("--key", type=Path, help="bootstrap: its private key (PEM)")
    parser.add_argument("--spiffe", default="", help="bootstrap: the SPIFFE id it certifies")
    parser.add_argument("--admin", default="127.0.0.1:15000")
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--workload", default="")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--token", default=os.environ.get("GOSSAMER_TOKEN", ""))
    parser.add_argument("--token-file", type=Path)
    parser.add_argument("--role", choices=("sidecar", "gateway", "vip"), default="sidecar")
    parser.add_argument("--vip-network", default="127.77.0.0/16")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--inbound-port", type=int, default=15006)
    parser.add_argument("--outbound-port", type=int, default=15001)
    parser.add_argument("--gateway-port", type=int, default=8080)
    parser.add_argument("--app-port", type=int, default=0)
    parser.add_argument(
        "--tcp-port",
        action="append",
        default=[],
        metavar="NAME=PORT",
        help="take the opaque TCP Service port NAME on PORT (repeatable)",
    )
    parser.add_argument("--gateway-https-port", type=int, default=0)
    parser.add_argument("--gateway-passthrough-port", type=int, default=0)
    parser.add_argument("--secrets-dir", default="")
    parser.add_argument("--zone", default="")
    parser.add_argument("--ready-url")
    parser.add_argument("--service-account", default="default")
    parser.add_argument("--pod", default="", help="the replica's pod name, e.g. web-0")
    parser.add_argument("--ca-file", type=Path, help="PEM roots to verify an https control plane")
    parser.add_argument("--no-register", action="store_true")
    parser.add_argument("--workers", type=int, default=1, help="proxies sharing the ports")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers: at least 1")
    host, _, port = args.admin.rpartition(":")
    agent = _agent_options(args, parser) if args.control_plane else None
    identity = None
    if args.cert_chain is not None or args.key is not None:
        if args.cert_chain is None or args.key is None or not args.spiffe:
            parser.error("--cert-chain, --key and --spiffe go together")
        identity = (args.cert_chain, args.key, args.spiffe)
    return RunOptions(
        args.bootstrap,
        host,
        int(port),
        args.drain_timeout,
        args.ready_file,
        agent=agent,
        identity=identity,
        workers=args.workers,
    )


def _agent_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> AgentOptions:
    from gossamer.proxy.agent import AgentOptions  # noqa: PLC0415

    if not args.workload:
        parser.error("--control-plane needs --workload")
    token = args.token
    if args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            parser.error(f"--token-file {args.token_file}: {error.strerror}")
    if not token:
        parser.error("--control-plane needs --token or --token-file")
    register = args.role == "sidecar" and not args.no_register
    tcp_ports = _tcp_ports(args.tcp_port, parser)
    hello = Hello(
        workload=args.workload,
        namespace=args.namespace,
        role=args.role,
        instance=(
            Instance(args.address, args.inbound_port, args.zone, tcp_ports) if register else None
        ),
        address=args.address,
        outbound_port=args.outbound_port,
        inbound_port=args.inbound_port,
        gateway_port=args.gateway_port,
        app_port=args.app_port,
        tcp_ports=tcp_ports,
        gateway_https_port=args.gateway_https_port,
        gateway_passthrough_port=args.gateway_passthrough_port,
        secrets_dir=str(Path(args.secrets_dir).resolve()) if args.secrets_dir else "",
        vip_network=args.vip_network,
        name=f"{args.workload}-{os.getpid()}",
        pod=args.pod,
    )
    urls = tuple(url.strip().rstrip("/") for url in args.control_plane.split(",") if url.strip())
    return AgentOptions(
        urls=urls,
        token=token,
        hello=hello,
        ready_url=args.ready_url,
        service_account=args.service_account,
        ca_file=args.ca_file,
    )


def _tcp_ports(values: list[str], parser: argparse.ArgumentParser) -> tuple[tuple[str, int], ...]:
    ports: dict[str, int] = {}
    for value in values:
        name, _, number = value.partition("=")
        if not name or not number.isdigit() or not 0 < int(number) < 65536:
            parser.error(f"--tcp-port {value!r}: NAME=PORT with a port from 1 to 65535")
        ports[name] = int(number)
    return tuple(sorted(ports.items()))


def entry(argv: list[str]) -> int:
    """The command line: one proxy, or with `--workers N` a parent of N."""
    options = _parse(argv)
    if options.workers > 1:
        from gossamer.proxy import workers  # noqa: PLC0415

        return workers.main(argv, options.workers)
    return main(options)


if __name__ == "__main__":
    sys.exit(entry(sys.argv[1:]))
