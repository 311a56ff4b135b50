"""Run one proxy from a snapshot file: reload on SIGHUP or a changed file, drain on SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import uvloop

from gossamer.proxy.admin import AdminServer
from gossamer.proxy.server import Proxy
from gossamer.snapshot import SnapshotError, load

log = logging.getLogger("gossamer.proxy")

# How often the bootstrap file's modification time is checked.
WATCH_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How `gossamer proxy` was asked to run."""

    bootstrap: Path
    admin_address: str = "127.0.0.1"
    admin_port: int = 15000
    drain_timeout: float = 10.0
    ready_file: Path | None = None


async def run(options: RunOptions) -> int:
    """Serve until SIGTERM/SIGINT or POST /drain; return the exit code."""
    proxy = Proxy()
    try:
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
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_reload(proxy, options)))
    watcher = loop.create_task(_watch(proxy, options))
    ports = ", ".join(f"{n}={h.config.address}:{h.port}" for n, h in proxy.listeners.items())
    log.info("serving snapshot %s: %s; admin on %s", _version(proxy), ports, admin.port)
    if options.ready_file is not None:
        options.ready_file.write_text(
            "\n".join(f"{n} {h.port}" for n, h in proxy.listeners.items())
            + f"\nadmin {admin.port}\n"
        )
    await stop.wait()
    log.info("draining (at most %.1fs)", options.drain_timeout)
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await proxy.drain(options.drain_timeout)
    await admin.close()
    return 0


async def _reload(proxy: Proxy, options: RunOptions) -> None:
    try:
        snapshot = load(options.bootstrap)
        await proxy.apply(snapshot)
    except (SnapshotError, OSError) as error:
        proxy.stats.incr("gossamer_snapshot_rejected_total")
        log.error("kept snapshot %s; the new one was rejected: %s", _version(proxy), error)
        return
    log.info("applied snapshot %s", snapshot.version)


async def _watch(proxy: Proxy, options: RunOptions) -> None:
    def stamp() -> float:
        try:
            return options.bootstrap.stat().st_mtime
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
    parser.add_argument("--bootstrap", type=Path, required=True)
    parser.add_argument("--admin", default="127.0.0.1:15000")
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args(argv)
    host, _, port = args.admin.rpartition(":")
    return RunOptions(args.bootstrap, host, int(port), args.drain_timeout, args.ready_file)


if __name__ == "__main__":
    sys.exit(main(_parse(sys.argv[1:])))
