"""Helpers of the event backbone's tests: fast settings, polling with a deadline, a broker process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, TypeVar

from gossamer.events.broker import BrokerSettings
from gossamer.events.groups import GroupSettings
from gossamer.events.history import HistorySettings
from gossamer.events.service import ServiceConfig
from gossamer.events.sql import QuerySettings

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backend:
    """The log a test's broker uses: the embedded sqlite file, or JetStream under a prefix."""

    name: Literal["sqlite", "jetstream"]
    nats_url: str = ""
    prefix: str = "gossamer"

    def serve_args(self) -> list[str]:
        """The `gossamer events serve` options that select this log."""
        if self.name == "sqlite":
            return []
        return ["--nats", self.nats_url, "--nats-prefix", self.prefix]


def fast_config(data_dir: Path, backend: Backend) -> ServiceConfig:
    """Short periods so that background work (sessions, retention, history) shows quickly."""
    groups = GroupSettings(
        session_timeout_s=1.5, keepalive_s=0.2, retry_backoff_s=0.02, retry_backoff_max_s=0.1
    )
    return ServiceConfig(
        data_dir,
        backend=backend.name,
        nats_url=backend.nats_url,
        nats_prefix=backend.prefix,
        broker=BrokerSettings(maintenance_interval_s=0.1, groups=groups),
        history=HistorySettings(period_s=0.1, seal_age_s=0.3, merge_segments=4),
        query=QuerySettings(timeout_s=10.0),
    )


async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float = 10.0, what: str = "condition"
) -> T:
    """Poll `check` until it returns a truthy value, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout}s (last: {value!r})")
        await asyncio.sleep(0.02)


def with_groups(config: ServiceConfig, **changes: float) -> ServiceConfig:
    """The same configuration with other consumer-group settings."""
    groups = replace(config.broker.groups, **changes)
    return replace(config, broker=replace(config.broker, groups=groups))


class BrokerProcess:
    """`gossamer events serve` in its own process, which a test can kill -9."""

    def __init__(self, data_dir: Path, backend: Backend, *args: str) -> None:
        self.data_dir = data_dir
        self.args = [*backend.serve_args(), *args]
        self.url = ""
        self._process: subprocess.Popen[str] | None = None
        self.log = data_dir.parent / f"{data_dir.name}.log"

    def start(self, timeout: float = 30.0) -> str:
        """Start the broker and wait (with a deadline) for the line that says where it listens."""
        command = [sys.executable, "-m", "gossamer", "events", "serve"]
        command += ["--data", str(self.data_dir), "--listen", "127.0.0.1:0", *self.args]
        with self.log.open("a") as log:
            self._process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, text=True, env=dict(os.environ)
            )
        assert self._process.stdout is not None
        line = _read_line(self._process.stdout, timeout)
        if "listening on " not in line:
            self.kill()
            raise AssertionError(f"broker did not start: {line!r}\n{self.log.read_text()}")
        self.url = line.split("listening on ")[1].split()[0]
        return self.url

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(10)
        self._close()

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)
        code = self._process.wait(timeout)
        self._close()
        return code

    def _close(self) -> None:
        if self._process is not None and self._process.stdout is not None:
            self._process.stdout.close()


def _read_line(stream: object, timeout: float) -> str:
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)  # type: ignore[arg-type]
    try:
        if not selector.select(timeout):
            return ""
        return stream.readline()  # type: ignore[attr-defined, no-any-return]
    finally:
        selector.close()


class NatsServer:
    """A real nats-server with JetStream, on a free port, storing in a temporary folder."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> str:
        """Start it and wait (with a deadline) until it accepts connections."""
        binary = _nats_binary()
        port = _free_port()
        log = (self.store.parent / "nats-server.log").open("ab")
        with log:
            self._process = subprocess.Popen(
                [binary, "-js", "-sd", str(self.store), "-a", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"nats-server did not start on port {port}")
            time.sleep(0.02)
        self.url = f"nats://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)


def _nats_binary() -> str:
    """nats-server on PATH (or /usr/sbin); installed with apt-get when missing and root."""
    found = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")
    if found:
        return found
    if os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "nats-server"], check=True, timeout=600)
        found = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")
    if not found:
        raise AssertionError(
            "nats-server is not installed and cannot be installed without root: "
            "run `sudo apt-get install -y nats-server` to run the JetStream tests"
        )
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """A real PostgreSQL server (Debian's package) in a temporary folder, on a free port.

    PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user that
    the package creates, in a folder that user owns.
    """

    def __init__(self) -> None:
        self.conninfo = ""
        self._folder: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> str:
        """initdb, start the server, and wait (with a deadline) until it accepts a login."""
        import psycopg  # noqa: PLC0415 - only the PostgreSQL tests need the driver

        bindir = _postgres_bindir()
        user = "postgres" if os.geteuid() == 0 else None
        self._folder = Path(tempfile.mkdtemp(prefix="gossamer-pg-"))
        if user is not None:
            shutil.chown(self._folder, user, user)
        data = self._folder / "data"
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "gossamer", "--auth=trust",
             "--encoding=UTF8", "--no-sync"],
            check=True, capture_output=True, timeout=timeout, user=user,
        )  # fmt: skip
        port = _free_port()
        log = (self._folder / "postgres.log").open("ab")
        with log:
            self._process = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                 "-k", str(self._folder), "-c", "listen_addresses=127.0.0.1"],
                stdout=log, stderr=subprocess.STDOUT, user=user,
            )  # fmt: skip
        self.conninfo = f"host=127.0.0.1 port={port} user=gossamer dbname=postgres"
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.conninfo, connect_timeout=1).close()
                return self.conninfo
            except psycopg.OperationalError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"PostgreSQL did not start on port {port}") from None
                time.sleep(0.05)

    def database(self) -> str:
        """A new, empty database; its connection string."""
        import psycopg  # noqa: PLC0415

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.conninfo.replace("dbname=postgres", f"dbname={name}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then SIGKILL if it lingers; remove the folder."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


def _postgres_bindir() -> Path:
    """Where Debian's PostgreSQL server programs are; installed with apt-get when missing."""

    def find() -> Path | None:
        versions = sorted(
            Path("/usr/lib/postgresql").glob("*/bin/postgres"),
            key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
        )
        if versions:
            return versions[-1].parent
        found = shutil.which("postgres")
        return Path(found).resolve().parent if found else None

    bindir = find()
    if bindir is None and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "postgresql"], check=True, timeout=600)
        bindir = find()
    if bindir is None:
        raise AssertionError(
            "PostgreSQL is not installed and cannot be installed without root: "
            "run `sudo apt-get install -y postgresql` to run the PostgreSQL outbox tests"
        )
    return bindir
