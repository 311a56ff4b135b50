"""`gossamer proxy --workers N`: N proxy processes sharing their listening ports (SO_REUSEPORT).

The parent runs no proxy itself. It starts N copies of `python -m gossamer.proxy.runner` with
the same arguments, each with `GOSSAMER_REUSE_PORT=1` in its environment so that every
listener binds with SO_REUSEPORT and the kernel spreads new connections over the workers. A
worker is an ordinary proxy: its own snapshot (from the same file, or its own stream from the
control plane, which lists each worker as a proxy of its own), its own statistics, its own
admin endpoint. Worker 0 keeps the `--admin` address and `--ready-file` given; worker i > 0
takes a free port on the same host (announced to the control plane, which is how it is
scraped) and writes `FILE.i`.

SIGTERM, SIGINT and SIGHUP are passed on to every worker. A worker that dies (a signal or a
non-zero exit) while the parent is not stopping is started again after `RESTART_DELAY_S`; one
that exits 0 (drained by POST /drain) is not. The parent exits once no worker is left, with the
first non-zero code among them.

Every listener of the snapshot needs a fixed port: on port 0 each worker would bind a port of
its own.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from gossamer.proxy.sockets import REUSE_PORT_ENV

log = logging.getLogger("gossamer.proxy.workers")

RESTART_DELAY_S = 1.0
"""A worker that died is started again after this long (a broken one costs a start a second)."""
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def worker_argv(argv: Sequence[str], index: int) -> list[str]:
    """The runner's arguments for worker `index`: `--workers` dropped, and for index > 0 a free
    admin port and a ready file of its own (argparse keeps the last of a repeated option)."""
    out: list[str] = []
    admin = "127.0.0.1:15000"
    ready: str | None = None
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        if arg in ("--admin", "--ready-file") and i + 1 < len(argv):
            admin, ready = (argv[i + 1], ready) if arg == "--admin" else (admin, argv[i + 1])
        out.append(arg)
    if index > 0:
        host = admin.rpartition(":")[0]
        out += ["--admin", f"{host}:0"]
        if ready is not None:
            out += ["--ready-file", f"{ready}.{index}"]
    return out


class Workers:
    """The running workers, by index; started again when one dies unless stopping."""

    def __init__(self, argv: Sequence[str], count: int) -> None:
        self.argv = list(argv)
        self.count = count
        self.running: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self.exit_code = 0

    def start(self, index: int) -> None:
        env = dict(os.environ, **{REUSE_PORT_ENV: "1"})
        command = [sys.executable, "-m", "gossamer.proxy.runner", *worker_argv(self.argv, index)]
        self.running[index] = subprocess.Popen(command, env=env)
        log.info("worker %d started (pid %d)", index, self.running[index].pid)

    def forward(self, signum: int, frame: FrameType | None) -> None:
        """Pass a signal on to every worker; a stopping signal also ends the restarts."""
        if signum != signal.SIGHUP:
            self.stopping = True
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signum)

    def supervise(self) -> int:
        """Start every worker, then wait for them; the exit code once none is left."""
        for signum in FORWARDED:
            signal.signal(signum, self.forward)
        for index in range(self.count):
            self.start(index)
        while self.running:
            pid, status = os.wait()
            ended = next((i for i, p in self.running.items() if p.pid == pid), None)
            if ended is None:
                continue
            process = self.running.pop(ended)
            process.returncode = os.waitstatus_to_exitcode(status)
            self._ended(ended, process.returncode)
        return self.exit_code

    def _ended(self, index: int, code: int) -> None:
        if not self.stopping and code != 0:
            log.warning("worker %d died (%d); starting it again", index, code)
            time.sleep(RESTART_DELAY_S)
            if not self.stopping:
                self.start(index)
                return
        log.info("worker %d exited (%d); %d left", index, code, len(self.running))
        if self.stopping and code in (-signal.SIGTERM, -signal.SIGINT):
            return  # stopped before it could drain (still starting): as asked
        if code != 0 and not self.exit_code:
            self.exit_code = code if code > 0 else 128 - code


def main(argv: Sequence[str], count: int) -> int:
    """Run `count` workers of the runner with `argv` until they end."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ready = _ready_files(argv, count)
    for path in ready:
        path.unlink(missing_ok=True)
    return Workers(argv, count).supervise()


def _ready_files(argv: Sequence[str], count: int) -> list[Path]:
    """The ready files the workers will write (none without `--ready-file`)."""
    if "--ready-file" not in argv:
        return []
    base = argv[list(argv).index("--ready-file") + 1]
    return [Path(base), *(Path(f"{base}.{i}") for i in range(1, count))]
