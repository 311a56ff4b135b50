"""Latency and CPU that a pair of sidecars adds at a fixed rate, with and without mTLS between them.

Usage: python bench/mtls_bench.py [--rate 1000] [--seconds 20] [--warmup 3] [--markdown FILE]
                                  [--profile DIR]

Three paths to the same nginx (1 worker, a 1 KB file), one after another in one invocation:

- direct: load generator -> nginx;
- plaintext pair: generator -> client sidecar -> server sidecar -> nginx, plain HTTP/1.1;
- mTLS pair: the same, the client sidecar originating mTLS (it checks the server's SPIFFE id)
  and the server sidecar's inbound listener STRICT, with certificates from a mesh CA made in a
  temporary folder.

Each sidecar is its own `python -m gossamer.proxy.runner` process on a bootstrap snapshot. The
client sidecar is pinned to core 0, the server sidecar and nginx to core 1 (as bench/proxy_bench.py
pins nginx); the load generator, this process, is not pinned and shares both.

The generator is open-loop: request i is due at start + i / rate whatever became of the others,
and its latency is counted from that time, so queueing anywhere (the generator included) shows
instead of being hidden by a late send (coordinated omission). A thread sleeps until each due
time (to the tens of microseconds, which event-loop timers are not) and writes the request on an
idle one of 16 keep-alive connections, or queues it until one is free; a uvloop loop in the main
thread reads and checks the answers. The table's last lines give the generator's own CPU and how
late it sent (p99), to show that it is not the bottleneck.

After `--warmup` seconds (not counted), `--seconds` are measured: latency of the requests due in
the window, responses completed in it, and each sidecar's CPU (its run time from
/proc/PID/task/*/schedstat) over it, given as vCPU per 1,000 requests per second and, its
inverse, as requests per CPU-second of the pair (the throughput figure of bench/proxy_bench.py
and bench/chain_bench.py; at 1,000 rps every request wakes each proxy, where under full load
one wake-up serves several, so it is lower than those benchmarks' figures for the same code).
Any response other than a 2xx with the 1 KB body, a lost connection, or no answer within 5 s
after the last request is an error. With `--profile DIR`, py-spy records both mTLS sidecars for
10 s of the window (collapsed stacks in DIR, and the top functions by own time printed); the
figures of such a run are perturbed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import cast

import httptools
import uvloop

# bench/ is this script's folder, hence on sys.path: reuse how the proxy benchmark runs nginx.
from proxy_bench import LOAD_CORE, family, free_port, nginx_backend, wait_port

from gossamer.proxy import native
from gossamer.security.ca import CertificateAuthority
from gossamer.security.identity import WorkloadIdentity
from gossamer.security.spiffe import spiffe_id
from gossamer.snapshot import (
    Cluster,
    Endpoint,
    InboundMtls,
    Listener,
    Node,
    Route,
    RouteTable,
    Security,
    Snapshot,
    VirtualHost,
    WeightedCluster,
    dump,
)

CLIENT_CORE = "0"
SERVER_CORE = LOAD_CORE  # nginx's core
CONNECTIONS = 16
BODY_PATH = "/body1KB"
BODY_BYTES = 1024
REQUEST = (
    f"GET {BODY_PATH} HTTP/1.1\r\nHost: greeter\r\nUser-Agent: mtls-bench\r\nAccept: */*\r\n\r\n"
).encode()
ANSWER_DEADLINE_S = 5.0
RECONNECT_AFTER_S = 0.1
PR_SET_TIMERSLACK = 29
READY_DEADLINE_S = 20.0
BACKLOG_LIMIT_S = 5.0
"""Requests queued for a connection, in seconds of load; beyond it they are errors."""
PROFILE_SECONDS = 10
PROFILE_RATE = 250
"""Samples a second; each pauses the process (native stacks), so more would skew the load."""
IDLE_FRAMES = frozenset({"epoll_wait", "epoll_pwait", "epoll_pwait2"})
SIDES = ("client-sidecar", "server-sidecar")
"""Names of the sidecars' profiles, in the order their pids are measured."""

ADDED_P90_TARGET_MS = 0.5
PAIR_CPU_TARGET = 0.15
ISTIO = (
    "Istio publishes 0.20 vCPU per sidecar per 1,000 rps (1.24) and +2.65 ms p90 for a "
    "sidecar pair (older versions)"
)

CLIENT_ID = spiffe_id("cluster.local", "default", "frontend")
SERVER_ID = spiffe_id("cluster.local", "default", "greeter")


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class Window:
    """The measured window: its times, and the CPU used in it (seconds of run time) by each
    sidecar, this process (the generator) and nginx; and the machine's idle time and the time
    the hypervisor stole, from which what the rest of the machine used follows."""

    pids: tuple[int, ...]
    backend: tuple[int, ...]
    profile: list[tuple[int, Path]] = field(default_factory=list)
    started: float = 0.0
    stopped: float = 0.0
    cpu: tuple[float, ...] = ()
    generator_cpu: float = 0.0
    backend_cpu: float = 0.0
    machine_idle: float = 0.0
    steal: float = 0.0
    profilers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, now: float) -> None:
        self.started = now
        self.cpu = tuple(cpu_seconds([pid]) for pid in self.pids)
        self.generator_cpu = time.process_time()
        self.backend_cpu = cpu_seconds(list(self.backend))
        self.machine_idle, self.steal = machine_idle_and_steal()
        self.profilers = [py_spy(pid, out) for pid, out in self.profile]

    def stop(self, now: float) -> None:
        self.stopped = now
        self.cpu = tuple(cpu_seconds([p]) - b for p, b in zip(self.pids, self.cpu, strict=True))
        self.generator_cpu = time.process_time() - self.generator_cpu
        self.backend_cpu = cpu_seconds(list(self.backend)) - self.backend_cpu
        idle, steal = machine_idle_and_steal()
        self.machine_idle, self.steal = idle - self.machine_idle, steal - self.steal

    def others(self) -> float:
        """vCPU used by everything else on the machine during the window."""
        elapsed = self.stopped - self.started
        busy = (os.cpu_count() or 1) * elapsed - self.machine_idle - self.steal
        ours = sum(self.cpu) + self.generator_cpu + self.backend_cpu
        return (busy - ours) / elapsed


def cpu_seconds(pids: list[int]) -> float:
    """CPU time the processes' threads have run, from the scheduler (`/proc/PID/task/*/
    schedstat`, nanoseconds): exact, where utime+stime are sampled at ticks and miss most of
    the short bursts of a proxy at 1,000 rps on a tickless kernel."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def machine_idle_and_steal() -> tuple[float, float]:
    """CPU time all cores spent idle (or waiting for I/O), and stolen by the hypervisor.

    The idle time is measured when a core sleeps; user and system time are sampled at ticks,
    which on a tickless kernel miss most of the short bursts of work at 1,000 rps.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[4]) + int(fields[5])) / tick, int(fields[8]) / tick


@dataclass
class Tally:
    """What the generator saw."""

    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    completed_in_window: int = 0
    queued: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class Connection(asyncio.Protocol):
    """One keep-alive connection: the ticker thread writes a request, the event loop reads its
    answer. One request at a time; `due` is set (under the load's lock) while one is in flight."""

    def __init__(self, load: OpenLoop, sock: socket.socket) -> None:
        self.load = load
        self.sock = sock
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.due: float | None = None
        self.body = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it

    def send(self) -> bool:
        """Write the request (from either thread); False if the socket refused it."""
        self.body = 0
        try:
            return self.sock.send(REQUEST) == len(REQUEST)
        except OSError:
            return False

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.load.failed(self, "unreadable response")
            assert self.transport is not None
            self.transport.abort()

    def on_body(self, body: bytes) -> None:
        self.body += len(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if not 200 <= status < 300:
            problem = f"status {status}"
        elif self.body != BODY_BYTES:
            problem = f"body of {self.body} bytes"
        else:
            problem = ""
        self.load.answered(self, problem)

    def eof_received(self) -> bool | None:
        self.load.forget(self)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.lost(self)


class OpenLoop:
    """Requests due at fixed intervals on a pool of connections; latency from the due time.

    The ticker thread sends when a request is due and an idle connection exists, and queues it
    otherwise; the event loop reads answers and sends a queued request on the connection that
    just answered. `lock` guards the idle connections, the queue and the tally.
    """

    def __init__(self, port: int, rate: float, warmup: float, seconds: float, window: Window):
        self.port = port
        self.rate = rate
        self.first_measured = round(warmup * rate)
        self.total = round((warmup + seconds) * rate)
        self.window = window
        self.tally = Tally()
        self.lock = threading.Lock()
        self.connections: set[Connection] = set()
        self.connecting: set[asyncio.Task[None]] = set()
        self.idle: deque[Connection] = deque()
        self.backlog: deque[float] = deque()
        self.backlog_limit = round(BACKLOG_LIMIT_S * rate)
        self.busy = 0
        self.begin = 0.0
        self.finished = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def due(self, index: int) -> float:
        return self.begin + index / self.rate

    async def connect(self) -> None:
        """Open one more connection to the pool; a failure is an error."""
        sock = socket.socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        try:
            await self.loop.sock_connect(sock, ("127.0.0.1", self.port))
            _, connection = await self.loop.create_connection(
                lambda: Connection(self, sock), sock=sock
            )
        except OSError as error:
            sock.close()
            with self.lock:
                self.tally.errors[f"connect: {error.strerror or error}"] += 1
            return
        with self.lock:
            self.connections.add(connection)
            self.idle.append(connection)

    def dispatch(self, due: float) -> None:
        """Send a request due now on an idle connection, or queue it (ticker thread)."""
        with self.lock:
            if not self.idle:
                if len(self.backlog) < self.backlog_limit:
                    self.backlog.append(due)
                    self.tally.queued += 1
                else:
                    self.tally.errors["generator backlog full"] += 1
                return
            connection = self.idle.popleft()
            connection.due = due
            self.busy += 1
        if not connection.send():
            self.failed(connection, "send failed")
        elif due >= self.due(self.first_measured):
            self.tally.lags.append(time.perf_counter() - due)

    def answered(self, connection: Connection, problem: str) -> None:
        """An answer came (event loop): tally it, then send a queued request or idle."""
        now = time.perf_counter()
        with self.lock:
            due, connection.due = connection.due, None
            if due is None:
                self.tally.errors["answer without a request"] += 1
                return
            self.busy -= 1
            if problem:
                self.tally.errors[problem] += 1
            else:
                if self.due(self.first_measured) <= due < self.due(self.total):
                    self.tally.latencies.append(now - due)
                if self.window.started and not self.window.stopped:
                    self.tally.completed_in_window += 1
            following = self.backlog.popleft() if self.backlog else None
            if following is None:
                self.idle.append(connection)
            else:
                connection.due = following
                self.busy += 1
        if following is not None and not connection.send():
            self.failed(connection, "send failed")
        self.check_finished()

    def failed(self, connection: Connection, problem: str) -> None:
        """The request in flight on a connection failed (either thread)."""
        with self.lock:
            if connection.due is not None:
                connection.due = None
                self.busy -= 1
                self.tally.errors[problem] += 1

    def forget(self, connection: Connection) -> None:
        """Take a closing connection out of the pool, so no request is sent on it."""
        with self.lock:
            with contextlib.suppress(ValueError):
                self.idle.remove(connection)
            self.connections.discard(connection)

    def lost(self, connection: Connection) -> None:
        """A connection closed (event loop): its request failed; open another."""
        self.forget(connection)
        self.failed(connection, "connection lost")
        if not self.finished.is_set():
            self.loop.call_later(RECONNECT_AFTER_S, self.reconnect)
        self.check_finished()

    def reconnect(self) -> None:
        if not self.finished.is_set():
            task = self.loop.create_task(self.connect())
            self.connecting.add(task)
            task.add_done_callback(self.connecting.discard)

    def check_finished(self) -> None:
        """Set `finished` once the window is over and every request is answered (event loop)."""
        with self.lock:
            done = bool(self.window.stopped) and not self.busy and not self.backlog
        if done:
            self.finished.set()

    def close(self) -> None:
        """Stop reconnecting and close every connection."""
        self.finished.set()
        for task in self.connecting:
            task.cancel()
        for connection in list(self.connections):
            assert connection.transport is not None
            connection.transport.close()


def tick(load: OpenLoop, stop: threading.Event) -> None:
    """Send each request at its due time; start and stop the window (the ticker thread)."""
    # Linux lets a sleeping thread wake up to 50 us late by default; due times are 1 ms apart.
    ctypes.CDLL(None).prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    for index in range(load.total + 1):
        due = load.due(index)
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        if stop.is_set():
            return
        if index == load.first_measured:
            load.window.start(time.perf_counter())
        if index == load.total:
            load.window.stop(time.perf_counter())
        else:
            load.dispatch(due)
    load.loop.call_soon_threadsafe(load.check_finished)


async def generate(port: int, rate: float, warmup: float, seconds: float, window: Window) -> Tally:
    """Run the open-loop load against a port; return what it saw."""
    load = OpenLoop(port, rate, warmup, seconds, window)
    await asyncio.gather(*(load.connect() for _ in range(CONNECTIONS)))
    if not load.idle:
        raise RuntimeError(f"cannot connect to 127.0.0.1:{port}: {dict(load.tally.errors)}")
    stop = threading.Event()
    load.begin = time.perf_counter() + 0.05
    ticker = threading.Thread(target=tick, args=(load, stop), daemon=True)
    ticker.start()
    try:
        await asyncio.sleep(warmup + seconds)
        try:
            await asyncio.wait_for(load.finished.wait(), ANSWER_DEADLINE_S)
        except TimeoutError:
            with load.lock:
                unanswered = load.busy + len(load.backlog)
                load.tally.errors[f"no answer within {ANSWER_DEADLINE_S:.0f} s"] += unanswered
    finally:
        stop.set()
        ticker.join()
        load.close()
    if not window.stopped:
        window.stop(time.perf_counter())
    return load.tally


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (seconds in, milliseconds out)."""
    if not ordered:
        return float("nan")
    rank = min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1
    return 1000.0 * ordered[rank]


# -- the sidecars -------------------------------------------------------------------------------


def issue(ca: CertificateAuthority, spiffe: str, account: str, folder: Path) -> tuple[Path, Path]:
    """A workload certificate and key from the mesh CA, written where a sidecar reads them."""
    identity = WorkloadIdentity.create(spiffe)
    identity.accept(ca.sign(identity.csr(), namespace="default", service_account=account))
    return identity.write(folder)


def one_route(table: str, cluster: Cluster) -> RouteTable:
    """A route table sending every request to one cluster."""
    route = Route(name="all", clusters=(WeightedCluster(cluster=cluster.name),))
    return RouteTable(
        name=table, virtual_hosts=(VirtualHost(name=table, domains=("*",), routes=(route,)),)
    )


def server_snapshot(backend_port: int, mtls: bool, roots: tuple[str, ...]) -> Snapshot:
    """The server sidecar: an inbound listener (STRICT mTLS, or plaintext) in front of nginx."""
    app = Cluster(
        name="inbound|80||", endpoints=(Endpoint(address="127.0.0.1", port=backend_port),)
    )
    inbound = Listener(
        "inbound",
        "127.0.0.1",
        0,
        "inbound",
        "inbound",
        mtls=InboundMtls(mode="STRICT") if mtls else None,
    )
    return Snapshot(
        version="bench",
        node=Node(workload="greeter", service_account="greeter", service="greeter"),
        listeners=(inbound,),
        route_tables=(one_route("inbound", app),),
        clusters=(app,),
        security=Security(roots=roots),
    )


def client_snapshot(server_port: int, mtls: bool, roots: tuple[str, ...]) -> Snapshot:
    """The client sidecar: an outbound listener to the server sidecar (mTLS when its id is set)."""
    endpoint = Endpoint(address="127.0.0.1", port=server_port, identity=SERVER_ID if mtls else "")
    greeter = Cluster(name="outbound|80||greeter.default.svc.cluster.local", endpoints=(endpoint,))
    return Snapshot(
        version="bench",
        node=Node(workload="frontend", service_account="frontend", service="frontend"),
        listeners=(Listener("outbound", "127.0.0.1", 0, "outbound", "outbound"),),
        route_tables=(one_route("outbound", greeter),),
        clusters=(greeter,),
        security=Security(roots=roots),
    )


@dataclass
class Sidecar:
    """A running sidecar process and the ports it listens on."""

    process: subprocess.Popen[bytes]
    ports: dict[str, int]


def start_sidecar(
    folder: Path,
    snapshot: Snapshot,
    core: str,
    identity: tuple[Path, Path, str],
    children: list[subprocess.Popen[bytes]],
) -> Sidecar:
    """Start `python -m gossamer.proxy.runner` on a bootstrap file, pinned; wait until ready."""
    folder.mkdir()
    bootstrap, ready, log = folder / "snapshot.json", folder / "ready", folder / "log"
    bootstrap.write_bytes(dump(snapshot))
    cert, key, spiffe = identity
    command = [
        *("taskset", "-c", core, sys.executable, "-m", "gossamer.proxy.runner"),
        *("--bootstrap", str(bootstrap), "--admin", "127.0.0.1:0"),
        *("--ready-file", str(ready), "--drain-timeout", "2"),
        *("--cert-chain", str(cert), "--key", str(key), "--spiffe", spiffe),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    children.append(process)
    return Sidecar(process, wait_ready(process, ready, log))


def wait_ready(process: subprocess.Popen[bytes], ready: Path, log: Path) -> dict[str, int]:
    """The ports a sidecar's ready file lists, once it is complete (it ends with the admin's)."""
    deadline = time.monotonic() + READY_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"a sidecar exited with {process.returncode}:\n{tail}")
        with contextlib.suppress(FileNotFoundError):
            lines = ready.read_text().splitlines()
            if lines and lines[-1].startswith("admin "):
                return {name: int(port) for name, port in (line.split() for line in lines)}
        time.sleep(0.02)
    raise TimeoutError(f"no ready file from a sidecar within {READY_DEADLINE_S:.0f} s ({log})")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not ended within 10 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy recording a process for PROFILE_SECONDS, native frames included."""
    exe = str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [
            *(exe, "record", "--pid", str(pid), "--format", "raw", "--output", str(out)),
            *("--duration", str(PROFILE_SECONDS), "--rate", str(PROFILE_RATE), "--native"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def own_time(collapsed: Path, top: int = 10) -> tuple[int, list[tuple[float, str]]]:
    """Busy samples, and the functions with most of them as their own (leaf) frame, as shares.

    A sample whose leaf is the event loop's epoll wait is idle, and left out.
    """
    leaves: Counter[str] = Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        name, _, where = stack.rsplit(";", 1)[-1].partition(" (")
        if name not in IDLE_FRAMES:
            leaves[f"{name} ({where.rsplit(':', 1)[0].rstrip(')')})"] += int(count)
    busy = sum(leaves.values())
    return busy, [(count / (busy or 1), name) for name, count in leaves.most_common(top)]


# -- one path, and the table ----------------------------------------------------------------------


@dataclass
class Row:
    """One path measured."""

    path: str
    rps: float
    p50: float
    p90: float
    p99: float
    client_cpu: float | None
    server_cpu: float | None
    errors: Counter[str]
    generator_cpu: float
    others: float
    steal: float
    lag_p99: float
    queued: int


def measure(
    path: str,
    port: int,
    *,
    sidecars: tuple[Sidecar, Sidecar] | None,
    backend: tuple[int, ...],
    args: argparse.Namespace,
    profile: Path | None = None,
) -> Row:
    """Run the load against one path; CPU of its sidecars (client, server) per 1,000 rps."""
    pids = tuple(s.process.pid for s in sidecars) if sidecars else ()
    window = Window(pids, backend)
    if profile is not None:
        outputs = (profile / f"{side}.txt" for side in SIDES)
        window.profile = list(zip(pids, outputs, strict=True))
    tally = uvloop.run(generate(port, args.rate, args.warmup, args.seconds, window))
    for profiler in window.profilers:
        try:
            profiler.wait(PROFILE_SECONDS + 20)
        except subprocess.TimeoutExpired:
            profiler.kill()
    elapsed = window.stopped - window.started
    rps = tally.completed_in_window / elapsed

    def per_thousand(cpu: float) -> float:
        return cpu / elapsed / (rps / 1000.0) if rps else float("nan")

    latencies = sorted(tally.latencies)
    return Row(
        path,
        rps,
        percentile(latencies, 0.50),
        percentile(latencies, 0.90),
        percentile(latencies, 0.99),
        per_thousand(window.cpu[0]) if sidecars else None,
        per_thousand(window.cpu[1]) if sidecars else None,
        tally.errors,
        per_thousand(window.generator_cpu),
        window.others(),
        window.steal / (window.stopped - window.started),
        percentile(sorted(tally.lags), 0.99),
        tally.queued,
    )


def render(rows: list[Row], rate: float) -> str:
    """The table, then each target against what was measured."""
    direct = rows[0]
    lines = [
        "| path | rps | p50 ms | p90 ms | p99 ms | added p50 ms | added p90 ms | added p99 ms "
        "| client sidecar vCPU / 1k rps | server sidecar vCPU / 1k rps | both vCPU / 1k rps "
        "| req per CPU-s of the pair | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    for row in rows:
        if row is direct:
            added = "- | - | -"
        else:
            added = " | ".join(
                f"{mine - theirs:+.3f}"
                for mine, theirs in zip(
                    (row.p50, row.p90, row.p99), (direct.p50, direct.p90, direct.p99), strict=True
                )
            )
        if row.client_cpu is None or row.server_cpu is None:
            cpu = "- | - | - | -"
        else:
            both = row.client_cpu + row.server_cpu
            # vCPU per 1,000 rps is CPU-seconds per 1,000 requests: its inverse is throughput.
            cpu = f"{row.client_cpu:.3f} | {row.server_cpu:.3f} | {both:.3f} | {1000 / both:.0f}"
        lines.append(
            f"| {row.path} | {row.rps:.0f} | {row.p50:.3f} | {row.p90:.3f} | {row.p99:.3f} "
            f"| {added} | {cpu} | {sum(row.errors.values())} |"
        )
    lines.append("")
    mtls = rows[-1]
    added_p90 = mtls.p90 - direct.p90
    assert mtls.client_cpu is not None and mtls.server_cpu is not None
    pair = mtls.client_cpu + mtls.server_cpu
    lines += [
        f"- mTLS pair, added p90: {added_p90:.3f} ms; target <= {ADDED_P90_TARGET_MS} ms: "
        f"{'met' if added_p90 <= ADDED_P90_TARGET_MS else 'NOT met'}",
        f"- mTLS pair, both sidecars: {pair:.3f} vCPU per 1,000 rps; target <= "
        f"{PAIR_CPU_TARGET}: {'met' if pair <= PAIR_CPU_TARGET else 'NOT met'}",
        f"- for reference: {ISTIO}",
    ]
    for row in rows:
        within = abs(row.rps - rate) <= 0.02 * rate
        problems = ", ".join(f"{kind}: {n}" for kind, n in row.errors.most_common()) or "none"
        lines.append(
            f"- {row.path}: rate {row.rps:.1f} rps ({'within' if within else 'NOT within'} 2% "
            f"of {rate:.0f}); generator {row.generator_cpu:.3f} vCPU / 1k rps, send lag p99 "
            f"{row.lag_p99:.3f} ms, waited for a connection: {row.queued}; the rest of the "
            f"machine (other processes, interrupts) used {row.others:.3f} vCPU, the hypervisor "
            f"stole {row.steal:.3f}; "
            f"errors: {problems}"
        )
    return "\n".join(lines)


# -- the run ------------------------------------------------------------------------------------


def start_pair(
    folder: Path,
    backend_port: int,
    *,
    mtls: bool,
    ca: CertificateAuthority,
    children: list[subprocess.Popen[bytes]],
) -> tuple[Sidecar, Sidecar, int]:
    """Server sidecar, then the client sidecar pointing at it; the port to load."""
    folder.mkdir()
    server_identity = (*issue(ca, SERVER_ID, "greeter", folder / "greeter-id"), SERVER_ID)
    client_identity = (*issue(ca, CLIENT_ID, "frontend", folder / "frontend-id"), CLIENT_ID)
    server = start_sidecar(
        folder / "server",
        server_snapshot(backend_port, mtls, ca.roots),
        SERVER_CORE,
        server_identity,
        children,
    )
    client = start_sidecar(
        folder / "client",
        client_snapshot(server.ports["inbound"], mtls, ca.roots),
        CLIENT_CORE,
        client_identity,
        children,
    )
    return client, server, client.ports["outbound"]


def run_paths(
    workdir: Path, children: list[subprocess.Popen[bytes]], args: argparse.Namespace
) -> list[Row]:
    """nginx, then each path in turn: direct, the plaintext pair, the mTLS pair."""
    backend_port = free_port()
    children.append(nginx_backend(workdir, backend_port))
    wait_port(backend_port)
    backend = nginx_pids(children[-1])
    ca = CertificateAuthority.load_or_create(workdir / "ca")
    rows = [measure("direct", backend_port, sidecars=None, backend=backend, args=args)]
    print(f"direct: p90 {rows[-1].p90:.3f} ms", flush=True)
    for name, mtls in (("plaintext pair", False), ("mTLS pair", True)):
        client, server, port = start_pair(
            workdir / name.replace(" ", "-"), backend_port, mtls=mtls, ca=ca, children=children
        )
        profile = args.profile if mtls else None
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
        rows.append(
            measure(
                name, port, sidecars=(client, server), backend=backend, args=args, profile=profile
            )
        )
        print(f"{name}: p90 {rows[-1].p90:.3f} ms", flush=True)
        stop(client.process)
        stop(server.process)
    return rows


def nginx_pids(master: subprocess.Popen[bytes]) -> tuple[int, ...]:
    """nginx's master and worker, once the worker exists."""
    deadline = time.monotonic() + READY_DEADLINE_S
    while len(pids := family(master.pid)) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError("nginx started no worker")
        time.sleep(0.02)
    return tuple(pids)


def machine() -> str:
    """nproc, the CPU model, the kernel, Python, and the load average now."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    load = ", ".join(f"{n:.2f}" for n in os.getloadavg())
    return (
        f"{os.cpu_count()} x {model}, Linux {os.uname().release}, "
        f"Python {sys.version.split()[0]}; hot path {native.describe()}; load average {load}"
    )


def interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured, per path")
    parser.add_argument("--warmup", type=float, default=3.0, help="not measured, per path")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--profile", type=Path, help="py-spy the mTLS sidecars into this folder")
    args = parser.parse_args()
    for tool in ("nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed (apt-get install -y nginx util-linux)")
            return 2
    if len(os.sched_getaffinity(0)) < 2:
        print("error: this benchmark pins the two sidecars to cores 0 and 1; it needs 2 cores")
        return 2
    if args.profile and not (Path(sys.executable).parent / "py-spy").exists():
        print("error: --profile needs py-spy in this environment (pip install py-spy)")
        return 2
    signal.signal(signal.SIGTERM, interrupted)
    print(f"machine: {machine()}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="gossamer-mtls-bench-"))
    workdir.chmod(0o755)  # nginx's workers run as an unprivileged user and read the body there
    children: list[subprocess.Popen[bytes]] = []
    try:
        rows = run_paths(workdir, children, args)
        table = render(rows, args.rate)
        print()
        print(table)
        if args.profile:
            for side in SIDES:
                busy, functions = own_time(args.profile / f"{side}.txt")
                print(
                    f"\n{side}: top functions by own time, share of {busy} busy samples "
                    f"(py-spy --native, {PROFILE_SECONDS} s at {PROFILE_RATE} Hz):"
                )
                for share, name in functions:
                    print(f"  {100 * share:5.1f}%  {name}")
        if args.markdown:
            args.markdown.write_text(table + "\n", encoding="utf-8")
        print(f"\nafter: {machine()}")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for process in reversed(children):
            stop(process)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
