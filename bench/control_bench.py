"""Control plane push: one VirtualService change to N connected proxies, and a full resync.

Usage: python bench/control_bench.py [--proxies 1000] [--changes 50] [--markdown FILE]
                                     [--profile DIR]

`gossamer control-plane` runs as a subprocess on a sqlite store in a temporary folder. Through
its API (admin token) the benchmark creates N services, each a Deployment `svc-i` and a Service
`svc-i` (port 80, named http). It then opens N simulated sidecars in this process, one WebSocket
each on the config stream of workload `svc-i`, with a Hello that carries a fake instance address
(127.1.x.y:15006) so that the registry gives every service one endpoint. A simulated proxy reads
only `type`, `version` and `base` of each update, answers it with an ACK at once, and says it is
ready after its first one, as the real agent does; it builds no snapshot. For the setup the
proxies connect at most 100 at a time and wait as long as the control plane needs (setup is not
measured against a target); afterwards they behave as the agent does.

- Push latency: M times, one VirtualService `vs-svc-k` (random k) is created or given another
  timeout and retry count; from just before the API request to the moment the last of the N
  proxies received the resulting update and sent its ACK (one clock: this process's).
- Full resync: the control plane is killed (SIGKILL) and started again on the same port and
  folder; the proxies reconnect as the agent does (backoff 0.1 s growing 1.6x to 2 s, or to
  30 s after a timeout, jittered; 5 s for TCP, 30 s for TLS and the upgrade, 30 s for the
  welcome); from the new process's start to the
  last proxy holding a whole update, given up after 10 minutes (then the table says how many
  made it).
- Floor: a bare WebSocket broadcast server (the `websockets` library on uvloop, over TLS with
  the control plane's own certificate, as the control plane runs) in a subprocess, the same N
  clients connected, sends each a message of the size of the median delta update above on a
  trigger; trigger to last answer, M times.

The control plane's CPU (utime+stime) and peak RSS (VmRSS sampled every 50 ms, and VmHWM for a
process started in the phase) come from /proc for each phase; the client's CPU from getrusage.
With `--profile DIR`, py-spy records the control plane during the setup, push and resync phases
(collapsed stacks: DIR/setup.txt, push.txt, resync.txt); figures from such a run are perturbed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed, WebSocketException

from gossamer.proxy.agent import ControlPlaneBusyError, dial
from gossamer.snapshot.protocol import (
    PATH,
    SUBPROTOCOL,
    Ack,
    Health,
    Hello,
    Instance,
    Reassembly,
    encode,
)

NAMESPACE = "default"
APPS = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
SERVICES = f"/api/v1/namespaces/{NAMESPACE}/services"
ROUTES = f"/apis/networking.istio.io/v1/namespaces/{NAMESPACE}/virtualservices"
MERGE = {"Content-Type": "application/merge-patch+json"}
INBOUND_PORT = 15006
CREATE_CONCURRENCY = 16
"""API requests in flight while creating the services."""
HANDSHAKE_CONCURRENCY = 100
"""Handshakes in flight when the proxies first connect (a reconnect storm is not limited)."""
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 2.0
BUSY_BACKOFF_MAX_S = 30.0
"""As the proxies' agent: 0.1 s growing 1.6x to 2 s, or to 30 s after a control plane that
took the connection did not answer in time; jittered by 0.5 to 1."""
CONNECT_TIMEOUT_S = 5.0
OPEN_TIMEOUT_S = 30.0
"""As the agent: 5 s for TCP, then 30 s for TLS and the upgrade, and again for the welcome."""
SETUP_OPEN_TIMEOUT_S = 300.0
"""Setup is not measured: the proxies wait for as long as the control plane needs."""
QUIET_S = 1.5
"""Longer than the control plane's longest debounce (1 s): see `settle`."""
PROGRESS_S = 30.0
ROUND_TIMEOUT_S = 60.0
START_TIMEOUT_S = 60.0
SETUP_TIMEOUT_S = 1200.0
RESYNC_TIMEOUT_S = 600.0
RSS_SAMPLE_S = 0.05


class Head(msgspec.Struct):
    """The fields of a stream message the simulated proxies read; the rest is skipped."""

    type: str
    version: str = ""
    base: str = ""
    control_plane: str = ""
    """The replica's name, in a welcome."""


_head = msgspec.json.Decoder(Head)
_ready = encode(Health(ready=True))


# -- processes --------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int, field_name: str) -> float:
    """VmRSS or VmHWM of a process, in MB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Children:
    """Every subprocess this benchmark starts, ended (by pid) however the benchmark ends."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, command: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as err:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err)
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        if process.poll() is None:
            process.send_signal(sig)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()

    def stop_all(self) -> None:
        for process in self.processes:
            self.stop(process)
        self.processes.clear()


async def ready_line(process: subprocess.Popen[bytes], pattern: str, log: Path) -> str:
    """The first group of `pattern` in the process's first stdout line that matches it."""
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            line = await asyncio.wait_for(
                asyncio.to_thread(process.stdout.readline), deadline - time.monotonic()
            )
        except TimeoutError:
            break
        if not line:
            break
        found = re.search(pattern, line.decode())
        if found:
            return found.group(1)
    process.kill()
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"process {process.pid} did not start; {log} ends with:\n{tail}")


class RssSampler:
    """The highest VmRSS of one process while it runs, sampled on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_S):
            self.peak = max(self.peak, memory_mb(self.pid, "VmRSS"))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


@dataclass
class Phase:
    """What one phase cost the server (control plane or floor) and this client."""

    name: str
    wall_s: float
    server_cpu_s: float
    server_peak_mb: float
    client_cpu_s: float


class PhaseMeter:
    """Measures a phase of one server process; `fresh` when the process starts in the phase."""

    def __init__(self, name: str, pid: int, fresh: bool = False) -> None:
        self.name, self.pid, self.fresh = name, pid, fresh
        self.cpu = 0.0 if fresh else cpu_seconds(pid)
        self.client = client_cpu_seconds()
        self.started = time.perf_counter()
        self.sampler = RssSampler(pid)

    def follow(self, pid: int) -> None:
        """The server was replaced by a new process (a restart)."""
        self.sampler.stop()
        self.pid, self.fresh, self.cpu = pid, True, 0.0
        self.sampler = RssSampler(pid)

    def stop(self) -> Phase:
        peak = self.sampler.stop()
        if self.fresh:
            peak = max(peak, memory_mb(self.pid, "VmHWM"))
        return Phase(
            self.name,
            time.perf_counter() - self.started,
            cpu_seconds(self.pid) - self.cpu,
            peak,
            client_cpu_seconds() - self.client,
        )


class Profiler:
    """py-spy recording one process until stopped (or until the process ends)."""

    def __init__(self, pid: int, out: Path) -> None:
        exe = str(Path(sys.executable).parent / "py-spy")
        command = [exe, "record", "--pid", str(pid), "--format", "raw", "-o", str(out)]
        self.process = subprocess.Popen(
            [*command, "--rate", "100", "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- simulated proxies ------------------------------------------------------------------------


@dataclass(eq=False)
class Round:
    """Waiting for every proxy's first update (or first whole update) after `started`."""

    started: float
    remaining: int
    whole_only: bool = False
    number: int = 0
    first: float = 0.0
    last: float = 0.0
    sizes: list[int] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class Fleet:
    """N simulated proxies in this process, and what they received."""

    url: str
    token: str
    proxies: list[SimulatedProxy] = field(default_factory=list)
    connected: int = 0
    updates: int = 0
    last_update: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)
    round: Round | None = None
    rounds: int = 0
    replica: str = ""
    """The control-plane replica that welcomed the last proxy."""
    gate: asyncio.Semaphore | None = None
    open_timeout: float = OPEN_TIMEOUT_S
    tls: ssl.SSLContext | None = None
    """Verifies the control plane (wss) with the mesh's roots, as the agent does."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, count: int) -> None:
        self.proxies = [SimulatedProxy(self, i) for i in range(count)]
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(proxy.run()) for proxy in self.proxies]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()

    def begin(self, whole_only: bool = False) -> Round:
        self.rounds += 1
        self.round = Round(time.perf_counter(), len(self.proxies), whole_only, self.rounds)
        return self.round

    def received(self, proxy: SimulatedProxy, head: Head, size: int, now: float) -> None:
        self.updates += 1
        self.last_update = now
        current = self.round
        if current is None or proxy.round == current.number or current.done.is_set():
            return
        if current.whole_only and head.base:
            return
        proxy.round = current.number
        current.first = current.first or now
        current.last = now
        current.sizes.append(size)
        current.remaining -= 1
        if current.remaining == 0:
            current.done.set()

    async def wait(self, current: Round, timeout: float) -> float:
        """Seconds from the round's start to its last proxy; TimeoutError says how many miss."""
        deadline = current.started + timeout
        try:
            while not current.done.is_set():
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise TimeoutError(
                        f"{current.remaining} of {len(self.proxies)} proxies still waiting "
                        f"after {timeout:.0f}s"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(current.done.wait(), min(left, PROGRESS_S))
                if not current.done.is_set() and left > PROGRESS_S:
                    print(f"  {self.progress(current)}", flush=True)
        finally:
            self.round = None
        return current.last - current.started

    def progress(self, current: Round) -> str:
        elapsed = time.perf_counter() - current.started
        return (
            f"{elapsed:.0f}s: {len(self.proxies) - current.remaining} done, "
            f"{self.connected} connected, failed attempts {dict(self.failures)}"
        )

    async def settle(self, api: httpx.AsyncClient, timeout: float) -> float:
        """Wait until the control plane has nothing more to send; when the last update came.

        Settled: every proxy connected, nothing received for QUIET_S (longer than a debounce,
        so a recompute due has started), then the control plane (one event loop: it answers
        after any recompute in progress) reports every proxy SYNCED, and still nothing came.
        """
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            mark = self.updates
            await asyncio.sleep(QUIET_S)
            if self.connected < len(self.proxies) or self.updates != mark:
                continue
            try:
                states = await proxy_states(api, self.replica)
            except httpx.HTTPError:
                continue
            if states["SYNCED"] == len(self.proxies) and self.updates == mark:
                return self.last_update
        raise TimeoutError(f"still busy after {timeout:.0f}s ({self.connected} connected)")


class SimulatedProxy:
    """One sidecar's config stream: hello, then ACK every update, reconnecting with backoff."""

    __slots__ = ("fleet", "hello", "index", "round", "version")

    def __init__(self, fleet: Fleet, index: int) -> None:
        self.fleet = fleet
        self.index = index
        self.version = ""
        self.round = 0
        address = f"127.1.{index // 250}.{index % 250 + 1}"
        self.hello = Hello(
            workload=f"svc-{index}",
            namespace=NAMESPACE,
            role="sidecar",
            instance=Instance(address, INBOUND_PORT),
            inbound_port=INBOUND_PORT,
            name=f"bench-{index}",
        )

    async def run(self) -> None:
        failures = 0
        while True:
            busy = False
            try:
                await self._session()
                failures = 0
            except ControlPlaneBusyError:
                busy = True
                self.fleet.failures["busy"] += 1
            except (
                OSError,
                EOFError,
                TimeoutError,
                WebSocketException,
                msgspec.DecodeError,
            ) as error:
                self.fleet.failures[type(error).__name__] += 1
            cap = BUSY_BACKOFF_MAX_S if busy else BACKOFF_MAX_S
            delay = min(cap, BACKOFF_INITIAL_S * 1.6**failures)
            failures += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _session(self) -> None:
        """One connection, until it ends; the backoff is reset once it got a welcome."""
        fleet = self.fleet
        gate = fleet.gate or contextlib.nullcontext()
        async with gate:
            websocket = await self._open()
        fleet.connected += 1
        try:
            await self._follow(websocket)
        except ConnectionClosed:
            pass  # the control plane went away: reconnect, starting the backoff afresh
        finally:
            fleet.connected -= 1
            await websocket.close()

    async def _follow(self, websocket: ClientConnection) -> None:
        ready = False
        reassembly = Reassembly()
        async for piece in websocket:
            data = reassembly.feed(piece)
            if data is None:
                continue  # a large update comes in pieces, as the agent reads it
            head = _head.decode(data)
            if head.type != "update":
                continue
            await websocket.send(encode(Ack(head.version)))
            now = time.perf_counter()
            self.version = head.version
            self.fleet.received(self, head, len(data), now)
            if not ready:
                await websocket.send(_ready)
                ready = True

    async def _open(self) -> ClientConnection:
        query = urlencode({"namespace": NAMESPACE, "workload": self.hello.workload})
        sock = await dial(self.fleet.url, CONNECT_TIMEOUT_S)
        try:
            async with asyncio.timeout(self.fleet.open_timeout):
                websocket = await connect(
                    f"{self.fleet.url}{PATH}?{query}",
                    sock=sock,
                    additional_headers={"Authorization": f"Bearer {self.fleet.token}"},
                    subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                    ping_interval=None,  # the server pings; its pongs are answered regardless
                    open_timeout=None,
                    ssl=self.fleet.tls,
                    max_size=64 * 1024 * 1024,
                    compression=None,
                )
        except TimeoutError:
            sock.close()
            raise ControlPlaneBusyError("no TLS handshake and upgrade in time") from None
        except BaseException:
            sock.close()
            raise
        try:
            await websocket.send(encode(msgspec.structs.replace(self.hello, version=self.version)))
            try:
                reply = await asyncio.wait_for(websocket.recv(), self.fleet.open_timeout)
            except TimeoutError:
                raise ControlPlaneBusyError("no welcome in time") from None
            welcome = _head.decode(reply)
            if welcome.type != "welcome":
                raise WebSocketException(f"expected a welcome, got {welcome.type}")
            self.fleet.replica = welcome.control_plane
        except BaseException:
            await websocket.close()
            raise
        return websocket


# -- control plane ----------------------------------------------------------------------------


def deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "command": ["python", "-m", "app"]}]},
            },
        },
    }


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80}]},
    }


def http_routes(host: str, change: int) -> list[dict[str, Any]]:
    """A route whose timeout and retries differ from one change to the next."""
    return [
        {
            "route": [{"destination": {"host": host}}],
            "timeout": f"{change + 1}s",
            "retries": {"attempts": change % 5 + 1, "perTryTimeout": "1s"},
        }
    ]


class ControlPlaneProcess:
    """`gossamer control-plane` on sqlite in `state`, started and killed by the benchmark."""

    def __init__(self, children: Children, state: Path) -> None:
        self.children = children
        self.state = state
        self.log = state / "control-plane.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def spawn(self, port: int) -> None:
        exe = str(Path(sys.executable).parent / "gossamer")
        command = [exe, "control-plane", "--listen", f"127.0.0.1:{port}", "--state"]
        self.process = self.children.start([*command, str(self.state)], self.log)

    async def ready(self) -> str:
        assert self.process is not None
        self.url = await ready_line(self.process, r"listening on (\S+)", self.log)
        return self.url

    @property
    def token(self) -> str:
        return (self.state / "admin-token").read_text().strip()

    def client_tls(self) -> ssl.SSLContext:
        """What a client verifies this control plane with: the mesh's trust bundle."""
        return ssl.create_default_context(cafile=str(self.state / "ca" / "trust-bundle.pem"))

    def server_tls(self) -> ssl.SSLContext:
        """The control plane's own certificate, for the floor to serve the same handshake."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        folder = self.state / "api-tls"
        context.load_cert_chain(folder / "tls.crt", folder / "tls.key")
        return context

    def kill(self) -> None:
        assert self.process is not None
        self.children.stop(self.process, signal.SIGKILL)


async def create_services(api: httpx.AsyncClient, count: int) -> None:
    limit = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def create(path: str, body: dict[str, Any]) -> None:
        async with limit:
            response = await api.post(path, json=body)
        if response.status_code != 201:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:300]}")

    names = [f"svc-{i}" for i in range(count)]
    await asyncio.gather(*(create(APPS, deployment(name)) for name in names))
    await asyncio.gather(*(create(SERVICES, service(name)) for name in names))


async def change_route(api: httpx.AsyncClient, change: int, k: int, exists: bool) -> None:
    host = f"svc-{k}"
    if exists:
        body = {"spec": {"http": http_routes(host, change)}}
        response = await api.patch(f"{ROUTES}/vs-{host}", json=body, headers=MERGE)
    else:
        document = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": f"vs-{host}"},
            "spec": {"hosts": [host], "http": http_routes(host, change)},
        }
        response = await api.post(ROUTES, json=document)
    if response.status_code not in (200, 201):
        raise RuntimeError(f"change {change}: {response.status_code} {response.text[:300]}")


async def proxy_states(api: httpx.AsyncClient, replica: str) -> Counter[str]:
    """The states of the proxies connected to `replica`, and how many others are listed.

    A replica that died is listed with its proxies, as its lease last reported them, until the
    lease lapses (`instance_ttl_s`).
    """
    response = await api.get("/debug/v1/proxies")
    response.raise_for_status()
    return Counter(
        str(item["state"]) if item["controlPlane"] == replica else "other replica"
        for item in response.json()["items"]
    )


async def healthy_entries(api: httpx.AsyncClient) -> int:
    response = await api.get(f"/apis/networking.istio.io/v1/namespaces/{NAMESPACE}/workloadentries")
    response.raise_for_status()
    count = 0
    for item in response.json()["items"]:
        conditions = (item.get("status") or {}).get("conditions") or []
        count += any(c.get("type") == "Healthy" and c.get("status") == "True" for c in conditions)
    return count


@dataclass
class Results:
    """Everything one invocation measured."""

    proxies: int
    changes: int
    setup: dict[str, float] = field(default_factory=dict)
    push_ms: list[float] = field(default_factory=list)
    push_timeouts: int = 0
    creates: int = 0
    floor_ms: list[float] = field(default_factory=list)
    delta_bytes: int = 0
    whole_bytes: int = 0
    resync: dict[str, float] = field(default_factory=dict)
    phases: list[Phase] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)


async def setup(
    plane: ControlPlaneProcess,
    api: httpx.AsyncClient,
    fleet: Fleet,
    results: Results,
    profile: Path | None,
) -> None:
    meter = PhaseMeter("setup: create services, connect proxies", plane.pid)
    profiler = Profiler(plane.pid, profile / "setup.txt") if profile else None
    started = time.perf_counter()
    await create_services(api, results.proxies)
    created = time.perf_counter()
    fleet.gate = asyncio.Semaphore(HANDSHAKE_CONCURRENCY)
    fleet.open_timeout = SETUP_OPEN_TIMEOUT_S
    fleet.start(results.proxies)
    whole = fleet.begin(whole_only=True)
    await fleet.wait(whole, SETUP_TIMEOUT_S)
    deadline = time.perf_counter() + SETUP_TIMEOUT_S
    while await healthy_entries(api) < results.proxies and time.perf_counter() < deadline:
        await asyncio.sleep(1.0)
    last = await fleet.settle(api, SETUP_TIMEOUT_S)
    fleet.gate, fleet.open_timeout = None, OPEN_TIMEOUT_S
    results.phases.append(meter.stop())
    if profiler:
        profiler.stop()
    results.setup = {
        f"create {2 * results.proxies} objects (s)": created - started,
        f"connect {results.proxies} proxies, last whole update (s)": whole.last - created,
        "endpoints registered, last update (s)": last - created,
    }
    healthy = await healthy_entries(api)
    results.checks.append(f"after setup: {healthy} of {results.proxies} WorkloadEntries healthy")


async def measure_push(
    plane: ControlPlaneProcess,
    api: httpx.AsyncClient,
    fleet: Fleet,
    results: Results,
    profile: Path | None,
) -> None:
    rng = random.Random(4)
    existing: set[int] = set()
    profiler = Profiler(plane.pid, profile / "push.txt") if profile else None
    meter = PhaseMeter(f"push: {results.changes} changes", plane.pid)
    sizes: list[int] = []
    for change in range(results.changes):
        await fleet.settle(api, ROUND_TIMEOUT_S)
        k = rng.randrange(results.proxies)
        current = fleet.begin()
        await change_route(api, change, k, k in existing)
        results.creates += k not in existing
        existing.add(k)
        try:
            results.push_ms.append(await fleet.wait(current, ROUND_TIMEOUT_S) * 1000)
        except TimeoutError as error:
            results.push_timeouts += 1
            print(f"change {change}: {error}", flush=True)
        sizes.extend(current.sizes)
    results.phases.append(meter.stop())
    if profiler:
        profiler.stop()
    print("push ms, in order:", " ".join(f"{ms:.0f}" for ms in results.push_ms), flush=True)
    results.delta_bytes = int(statistics.median(sizes)) if sizes else 0
    await fleet.settle(api, ROUND_TIMEOUT_S)
    states = await proxy_states(api, fleet.replica)
    results.checks.append(f"after push: /debug/v1/proxies {dict(states)}")


async def measure_resync(
    plane: ControlPlaneProcess,
    api: httpx.AsyncClient,
    fleet: Fleet,
    results: Results,
    profile: Path | None,
) -> None:
    port = int(plane.url.rsplit(":", 1)[1])
    meter = PhaseMeter("resync: restart, all reconnect", plane.pid)
    plane.kill()
    deadline = time.perf_counter() + 30
    while fleet.connected and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    failures_before = sum(fleet.failures.values())
    updates_before = fleet.updates
    whole = fleet.begin(whole_only=True)
    plane.spawn(port)
    meter.follow(plane.pid)
    await plane.ready()
    ready = time.perf_counter()
    profiler = Profiler(plane.pid, profile / "resync.txt") if profile else None
    n = results.proxies
    try:
        await fleet.wait(whole, RESYNC_TIMEOUT_S)
        last = await fleet.settle(api, RESYNC_TIMEOUT_S) - whole.started
    except TimeoutError as error:
        print(f"resync: {error}", flush=True)
        last = math.nan
    results.phases.append(meter.stop())
    if profiler:
        profiler.stop()
    results.resync = {
        "control plane ready (s)": ready - whole.started,
        "first whole update (s)": whole.first - whole.started,
        f"proxies holding a whole update (of {n})": n - whole.remaining,
        f"last of {n} whole updates (s)": whole.last - whole.started
        if whole.done.is_set()
        else math.nan,
        "last update, then settled (s)": last,
        "updates per proxy": (fleet.updates - updates_before) / n,
        "failed connection attempts": sum(fleet.failures.values()) - failures_before,
    }
    results.whole_bytes = int(statistics.median(whole.sizes)) if whole.sizes else 0
    states = await proxy_states(api, fleet.replica)
    results.checks.append(f"after resync: /debug/v1/proxies {dict(states)}")


async def measure_control_plane(
    results: Results, children: Children, workdir: Path, profile: Path | None
) -> None:
    plane = ControlPlaneProcess(children, workdir)
    plane.spawn(0)
    url = await plane.ready()
    headers = {"Authorization": f"Bearer {plane.token}"}
    limits = httpx.Limits(max_connections=CREATE_CONCURRENCY)
    tls = plane.client_tls()
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=60, limits=limits, verify=tls
    ) as api:
        fleet = Fleet(url.replace("https://", "wss://", 1), plane.token, tls=tls)
        try:
            await setup(plane, api, fleet, results, profile)
            print("setup:", _pairs(results.setup), flush=True)
            await measure_push(plane, api, fleet, results, profile)
            print("push ms:", _summary(results.push_ms), flush=True)
            await measure_resync(plane, api, fleet, results, profile)
            print("resync:", _pairs(results.resync), flush=True)
        finally:
            await fleet.close()
            children.stop(plane.process)  # type: ignore[arg-type]


# -- floor ------------------------------------------------------------------------------------


async def floor_server(port: int, tls_folder: Path) -> None:
    """A bare broadcast server: welcome each client, send all of them N bytes on a trigger.

    It serves TLS with the control plane's own certificate, so that the handshakes cost the
    same on both sides of the comparison."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tls_folder / "tls.crt", tls_folder / "tls.key")
    clients: set[ServerConnection] = set()
    version = 0

    async def handle(websocket: ServerConnection) -> None:
        nonlocal version
        assert websocket.request is not None
        if websocket.request.path == "/trigger":
            async for message in websocket:
                version += 1
                broadcast(clients, _floor_message(version, int(message)))
            return
        await websocket.recv()  # the hello
        await websocket.send(b'{"type":"welcome"}')
        clients.add(websocket)
        try:
            async for _ in websocket:
                pass
        finally:
            clients.discard(websocket)

    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(
        handle,
        "127.0.0.1",
        port,
        compression=None,
        ping_interval=5.0,
        ping_timeout=10.0,
        max_size=64 * 1024 * 1024,
        backlog=1024,
        ssl=tls,
    ):
        print(f"floor server listening on {port}", flush=True)
        await stop


def _floor_message(version: int, size: int) -> bytes:
    head = b'{"type":"update","version":"%d","base":"%d","pad":"' % (version, version - 1)
    return head + b"x" * max(0, size - len(head) - 2) + b'"}'


async def measure_floor(results: Results, children: Children, workdir: Path) -> None:
    port = free_port()
    log = workdir / "floor.log"
    command = [sys.executable, __file__, "--floor-server", str(port)]
    process = children.start([*command, "--floor-tls", str(workdir / "api-tls")], log)
    tls = ssl.create_default_context(cafile=str(workdir / "ca" / "trust-bundle.pem"))
    try:
        await ready_line(process, r"listening on (\d+)", log)
        meter = PhaseMeter(f"floor: {results.changes} broadcasts", process.pid, fresh=True)
        fleet = Fleet(f"wss://127.0.0.1:{port}", "", tls=tls)
        fleet.gate = asyncio.Semaphore(HANDSHAKE_CONCURRENCY)
        fleet.start(results.proxies)
        deadline = time.perf_counter() + SETUP_TIMEOUT_S
        while fleet.connected < results.proxies and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        size = str(results.delta_bytes or 500).encode()
        trigger = await connect(f"wss://127.0.0.1:{port}/trigger", compression=None, ssl=tls)
        try:
            for _ in range(results.changes):
                current = fleet.begin()
                await trigger.send(size)
                results.floor_ms.append(await fleet.wait(current, ROUND_TIMEOUT_S) * 1000)
                await asyncio.sleep(QUIET_S)
        finally:
            await trigger.close()
            await fleet.close()
        results.phases.append(meter.stop())
    finally:
        children.stop(process)


# -- report -----------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered), math.ceil(fraction * len(ordered))) - 1)]


def _summary(values: list[float]) -> str:
    if not values:
        return "none"
    marks = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
    return " ".join(f"{name} {percentile(values, q):.1f}" for name, q in marks) + (
        f" max {max(values):.1f}"
    )


def _pairs(values: dict[str, float]) -> str:
    return "; ".join(f"{name} {value:.2f}" for name, value in values.items())


def render(results: Results) -> str:
    n, m = results.proxies, results.changes
    lines = [
        f"| push to {n} proxies, {m} changes (ms) | gossamer | floor | gossamer / floor |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
        ours = percentile(results.push_ms, q) if results.push_ms else float("nan")
        floor = percentile(results.floor_ms, q) if results.floor_ms else float("nan")
        lines.append(f"| {name} | {ours:.1f} | {floor:.1f} | {ours / floor:.1f}x |")
    lines += [
        "",
        "| measure | value |",
        "| --- | ---: |",
        *(f"| {name} | {value:.2f} |" for name, value in results.setup.items()),
        f"| changes that created a VirtualService (others patched one) | {results.creates} |",
        f"| changes not received by all within {ROUND_TIMEOUT_S:.0f} s | {results.push_timeouts} |",
        f"| delta update, median size (bytes; the floor sends this many) | {results.delta_bytes} |",
        f"| whole update, median size (bytes) | {results.whole_bytes} |",
        *(f"| resync: {name} | {_number(value)} |" for name, value in results.resync.items()),
        "",
        "| phase | wall s | server CPU s | server peak RSS MB | client CPU s |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {p.name} | {p.wall_s:.1f} | {p.server_cpu_s:.1f} | {p.server_peak_mb:.0f} "
            f"| {p.client_cpu_s:.1f} |"
            for p in results.phases
        ),
    ]
    return "\n".join(lines)


def _number(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


# -- main -------------------------------------------------------------------------------------


def raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            print(f"warning: open files limited to {target}; {needed} wanted", file=sys.stderr)


async def run(args: argparse.Namespace, children: Children, workdir: Path) -> Results:
    results = Results(args.proxies, args.changes)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    await measure_control_plane(results, children, workdir, args.profile)
    await measure_floor(results, children, workdir)
    print("floor ms:", _summary(results.floor_ms), flush=True)
    return results


def _loop_runner(main: Awaitable[Results]) -> Results:
    try:
        import uvloop  # noqa: PLC0415 -- optional: a lighter client when it is installed
    except ImportError:
        return asyncio.run(main)  # type: ignore[arg-type]
    return uvloop.run(main)  # type: ignore[arg-type]


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    parser.add_argument("--profile", type=Path, help="py-spy the control plane into this folder")
    parser.add_argument("--floor-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--floor-tls", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_server:
        import uvloop  # noqa: PLC0415 -- the loop the control plane runs on

        uvloop.run(floor_server(args.floor_server, args.floor_tls))
        return 0
    raise_open_files(2 * args.proxies + 512)
    signal.signal(signal.SIGTERM, _terminate)
    children = Children()
    workdir = Path(tempfile.mkdtemp(prefix="gossamer-control-bench-"))
    try:
        load = os.getloadavg()[0]
        results = _loop_runner(run(args, children, workdir))
        table = render(results)
        print()
        print(table)
        for check in results.checks:
            print(check)
        print(f"load average (1 min) before: {load:.2f}, after: {os.getloadavg()[0]:.2f}")
        if args.markdown:
            args.markdown.write_text(table + "\n")
    finally:
        children.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
