"""ApiProduct at the gateway: one rate limit shared by two replicas, and what keys and limits cost.

Usage: python bench/apiproduct_bench.py [--shared-duration 30] [--duration 5] [--rounds 7]
                                        [--connections 50] [--markdown FILE] [--profile DIR]
                                        [--shared-only]

Everything runs on loopback as real processes: `gossamer control-plane` (sqlite in a temporary
folder, TLS, the mesh CA), one nginx backend (1 worker, bench/proxy_bench.py's files) that a
Service `reviews` reaches through a WorkloadEntry, an Ingress with two hosts, and two gateway
replicas of one mesh (`python -m gossamer.proxy.runner --role gateway`, as `gossamer up` starts
its gateway, with a workload token minted for istio-ingressgateway) that take their snapshots
and lease their permits over the config stream. The gateways are pinned to core 0 (taskset);
this script (the paced load client), wrk, nginx and the control plane to core 1.

1. What keys and limits cost (gateway A alone takes the load). ApiProduct `throughput`
   (host throughput.example, every path, the key in `x-api-key`, one consumer) is absent
   ("off"), has a plan without limits ("keys only"), or a plan of 1,000,000 requests/s, burst
   1,000,000, and a quota of 10^9 a month ("keys + limits": nothing is refused), in turn. After
   each change the script waits until the gateway no longer enforces the old product (200
   without a key) and enforces the new one (401), warms for a second, then runs wrk (`-c50`,
   the key sent in every setting) for `--duration` seconds; `--rounds` rounds of one window
   per setting, the order rotating from round to round. Throughput is requests per CPU-second
   of the gateway process (utime+stime of all its threads from /proc/PID/stat over the
   window); the load core's CPU (wrk, nginx, and the control plane, which grants the leases)
   shows it is not the limit. The ratios to off are paired: each window over the same round's
   "off" window, the median of those reported with the lowest and highest, so that a machine
   drifting between rounds moves both sides of a ratio together. Target: keys + limits within
   10% of off. `--profile DIR` then records gateway A with py-spy for 10 s under wrk,
   keys + limits and off (DIR/limits.txt, DIR/off.txt, collapsed stacks).
2. A limit shared by two replicas. ApiProduct `shared` (host shared.example) has one plan of
   100 requests per 1 s, burst 100, failureMode open. The paced client sends 200 requests/s to
   gateway A and 100/s to gateway B at once for `--shared-duration` seconds (open loop: each
   request leaves at its time on an idle keep-alive connection, a new one if none is idle, so
   a request waiting for a lease delays no other) and counts the statuses of the requests sent
   in the window, how late each left, and what each gateway counted as allowed. Before the
   window the script waits 2.5 s, so that the permits the readiness checks leased go back
   (after 1 s unused) and the bucket is full. Target: admitted (2xx) within 5% of rate x
   duration (150 of 3,000) of rate x duration + burst (3,100); docs/api-gateway.md bounds it
   to [3,100 - 4 slices of 13, 3,100] (a slice held and a slice of credit per replica). Then
   the control plane is stopped and, once both gateways have seen it go, the same load runs
   again: each replica limits alone with the plan's full rate and burst (failureMode open: the
   documented fallback of the same gateways with the same plan). `--shared-only` runs this
   part alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import resource
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from control_bench import Children, ControlPlaneProcess
from proxy_bench import (
    LOAD_CORE,
    LOAD_CORE_BUSY,
    PROXY_CORE,
    Result,
    cpu_seconds,
    family,
    free_port,
    machine,
    median,
    nginx_backend,
    wait_port,
    warm,
    wrk,
)

from gossamer.proxy import native
from gossamer.proxy.apiproduct import REQUESTS_METRIC
from gossamer.runtime.plan import (
    GATEWAY_NAMESPACE,
    GATEWAY_SERVICE_ACCOUNT,
    GATEWAY_WORKLOAD,
)

KEY = "bench-consumer-key-7f3a9c"
KEY_HEADER = "x-api-key"
SHARED_HOST = "shared.example"
THROUGHPUT_HOST = "throughput.example"
SHARED_PATH = "/body100B"
THROUGHPUT_PATH = "/body1KB"
RATE = 100
BURST = 100
SPLIT = {"A": 200, "B": 100}
"""Requests per second the paced client sends to each gateway replica."""
SLICE = 13
"""The most one lease asks for at RATE and BURST: max(rate x 0.1 s, burst / 8), rounded up."""
SHARED_TARGET = 0.05
THROUGHPUT_TARGET = 0.10
SETTLE_S = 2.5
"""Longer than a gateway keeps unused permits (1 s) plus the bucket's refill (BURST / RATE)."""
WAIT_S = 30.0
"""How long a change to the mesh may take to reach the gateways."""
ANSWER_TIMEOUT_S = 5.0
PROFILE_S = 10
RUN_LIMIT_S = 900
"""The whole benchmark is given up after this long."""
SERVICES = "/api/v1/namespaces/default/services"
ENTRIES = "/apis/networking.istio.io/v1/namespaces/default/workloadentries"
INGRESSES = "/apis/networking.k8s.io/v1/namespaces/default/ingresses"
PRODUCTS = "/apis/gossamer.dev/v1alpha1/namespaces/default/apiproducts"


# -- the mesh ---------------------------------------------------------------------------------


def product(name: str, host: str, plan: dict[str, Any]) -> dict[str, Any]:
    """An ApiProduct of every path on `host`, one consumer holding KEY on `plan`."""
    return {
        "apiVersion": "gossamer.dev/v1alpha1",
        "kind": "ApiProduct",
        "metadata": {"name": name},
        "spec": {
            "hosts": [host],
            "routes": [{"name": "all", "uri": {"prefix": "/"}}],
            "apiKey": {"header": KEY_HEADER},
            "plans": [{"name": "bench", **plan}],
            "consumers": [
                {
                    "name": "acme",
                    "plan": "bench",
                    "keys": [{"sha256": hashlib.sha256(KEY.encode()).hexdigest()}],
                }
            ],
        },
    }


SHARED_PLAN = {"rateLimit": {"requests": RATE, "per": "1s", "burst": BURST}, "failureMode": "open"}
SETTINGS: dict[str, dict[str, Any] | None] = {
    "off": None,
    "keys only": {},
    "keys + limits": {
        "rateLimit": {"requests": 1_000_000, "per": "1s", "burst": 1_000_000},
        "quota": {"requests": 1_000_000_000, "period": "month"},
    },
}
"""ApiProduct `throughput` in each setting of the throughput windows: none, a plan without
limits, and limits no request reaches."""


async def create(api: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
    response = await api.post(path, json=body)
    if response.status_code != 201:
        raise RuntimeError(f"POST {path}: {response.status_code} {response.text}")


async def build_mesh(api: httpx.AsyncClient, backend_port: int) -> None:
    """The Service, its one static instance (nginx, no sidecar) and an Ingress of both hosts."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "reviews"},
        "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080}]},
    }
    entry = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {"name": "nginx"},
        "spec": {
            "address": "127.0.0.1",
            "ports": {"http": backend_port},
            "labels": {"app": "reviews"},
        },
    }
    backend = {"service": {"name": "reviews", "port": {"number": 9080}}}
    paths = [{"path": "/", "pathType": "Prefix", "backend": backend}]
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "api"},
        "spec": {
            "rules": [
                {"host": host, "http": {"paths": paths}} for host in (THROUGHPUT_HOST, SHARED_HOST)
            ]
        },
    }
    await create(api, SERVICES, service)
    await create(api, ENTRIES, entry)
    await create(api, INGRESSES, ingress)


async def gateway_token(api: httpx.AsyncClient, workdir: Path) -> Path:
    """A workload token for the ingress gateway, as `gossamer up` mints it."""
    response = await api.post(
        f"/auth/v1/namespaces/{GATEWAY_NAMESPACE}/workloadtokens",
        json={"workload": GATEWAY_WORKLOAD},
    )
    response.raise_for_status()
    path = workdir / "gateway-token"
    path.write_text(response.json()["token"] + "\n")
    path.chmod(0o600)
    return path


@dataclass
class Gateway:
    """One gateway replica: its ports, process and log."""

    name: str
    port: int
    admin: int
    process: subprocess.Popen[bytes]
    log: Path

    def lines_after(self, offset: int) -> str:
        return self.log.read_bytes()[offset:].decode(errors="replace")


def start_gateway(
    children: Children, name: str, plane: ControlPlaneProcess, token: Path, workdir: Path
) -> Gateway:
    """`python -m gossamer.proxy.runner` as `gossamer up` runs its gateway, on the proxy core."""
    port, admin = free_port(), free_port()
    log = workdir / f"gateway-{name}.log"
    command = [
        "taskset", "-c", PROXY_CORE, sys.executable, "-m", "gossamer.proxy.runner",
        "--control-plane", plane.url, "--ca-file", str(plane.state / "ca" / "trust-bundle.pem"),
        "--workload", GATEWAY_WORKLOAD, "--namespace", GATEWAY_NAMESPACE,
        "--token-file", str(token), "--service-account", GATEWAY_SERVICE_ACCOUNT,
        "--pod", f"{GATEWAY_WORKLOAD}-{name.lower()}", "--admin", f"127.0.0.1:{admin}",
        "--drain-timeout", "2", "--role", "gateway", "--gateway-port", str(port),
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    children.processes.append(process)
    return Gateway(name, port, admin, process, log)


async def status_of(port: int, host: str, path: str, key: str | None = None) -> int:
    """One request's status (0: no answer)."""
    headers = {"host": host, **({KEY_HEADER: key} if key else {})}
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            response = await client.get(f"http://127.0.0.1:{port}{path}", headers=headers)
    except httpx.HTTPError:
        return 0
    return response.status_code


async def allowed(gateway: Gateway) -> int:
    """What the gateway itself counted as allowed for product `shared` (its admin endpoint)."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        text = (await client.get(f"http://127.0.0.1:{gateway.admin}/stats/prometheus")).text
    mark = 'product="default/shared",'
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith(REQUESTS_METRIC) and mark in line and 'decision="allowed"' in line
    )


async def until(
    check: Callable[[], Awaitable[bool]], what: str, deadline_s: float = WAIT_S
) -> None:
    """Poll `check()` until it holds, or fail after `deadline_s`."""
    end = time.monotonic() + deadline_s
    while not await check():
        if time.monotonic() > end:
            raise RuntimeError(f"not within {deadline_s:g} s: {what}")
        await asyncio.sleep(0.05)


async def answers(gateways: list[Gateway], host: str, path: str, status: int) -> None:
    """Wait until every gateway answers a request without a key with `status`."""
    for gateway in gateways:

        async def check(gateway: Gateway = gateway) -> bool:
            return await status_of(gateway.port, host, path) == status

        await until(check, f"gateway {gateway.name} answers {host}{path} with {status}")


# -- the paced load ---------------------------------------------------------------------------

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class Paced:
    """Requests to one gateway at a fixed rate over keep-alive connections (open loop: an
    answer that takes long delays no other request), and what came back."""

    name: str
    port: int
    rate: float
    request: bytes
    idle: deque[Connection] = field(default_factory=deque)
    statuses: Counter[int] = field(default_factory=Counter)
    """Status codes; 0 counts requests with no answer (error or ANSWER_TIMEOUT_S)."""
    lags: list[float] = field(default_factory=list)
    """How late each request left, after its scheduled time, in seconds."""
    opened: int = 0
    span: float = 0.0

    async def open(self, count: int) -> None:
        for _ in range(count):
            self.idle.append(await self._connect())

    async def run(self, start: float, duration: float) -> None:
        """Send rate x duration requests, the i-th at start + i / rate, and wait for answers."""
        loop = asyncio.get_running_loop()
        running: set[asyncio.Task[None]] = set()
        for i in range(round(self.rate * duration)):
            due = start + i / self.rate
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            self.lags.append(loop.time() - due)
            task = loop.create_task(self._one())
            running.add(task)
            task.add_done_callback(running.discard)
        self.span = loop.time() - start + 1 / self.rate
        if running:
            await asyncio.wait(set(running), timeout=ANSWER_TIMEOUT_S + 1)
        for task in list(running):
            task.cancel()
            self.statuses[0] += 1

    def close(self) -> None:
        while self.idle:
            self.idle.popleft()[1].close()

    @property
    def sent(self) -> int:
        return len(self.lags)

    async def _connect(self) -> Connection:
        self.opened += 1
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def _one(self) -> None:
        reused = bool(self.idle)
        connection = self.idle.popleft() if reused else await self._connect()
        try:
            try:
                status, keep = await asyncio.wait_for(
                    exchange(connection, self.request), ANSWER_TIMEOUT_S
                )
            except asyncio.IncompleteReadError as error:
                if not (reused and not error.partial):
                    raise
                # The gateway closed an idle connection as the request left: once more, anew.
                connection[1].close()
                connection = await self._connect()
                status, keep = await asyncio.wait_for(
                    exchange(connection, self.request), ANSWER_TIMEOUT_S
                )
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            connection[1].close()
            self.statuses[0] += 1
            return
        self.statuses[status] += 1
        if keep:
            self.idle.append(connection)
        else:
            connection[1].close()


async def exchange(connection: Connection, request: bytes) -> tuple[int, bool]:
    """Send one request and read its response: (status, whether the connection stays open)."""
    reader, writer = connection
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked, keep = 0, False, True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = value == b"chunked"
        elif name == b"connection":
            keep = value != b"close"
    if chunked:
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    else:
        await reader.readexactly(length)
    return status, keep


def paced_request(host: str) -> bytes:
    return f"GET {SHARED_PATH} HTTP/1.1\r\nHost: {host}\r\n{KEY_HEADER}: {KEY}\r\n\r\n".encode()


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Phase:
    """One window of the paced load on both replicas."""

    name: str
    loads: list[Paced]
    duration: float
    cpu: dict[str, float]
    """Percent of one core over the window: each gateway, the client, nginx, control plane."""
    counted: dict[str, int]
    """Requests each gateway counted as allowed over the window (its own metric)."""

    @property
    def admitted(self) -> int:
        return sum(n for load in self.loads for s, n in load.statuses.items() if 200 <= s < 300)


async def paced_phase(
    name: str, gateways: list[Gateway], duration: float, watched: dict[str, list[int]]
) -> Phase:
    """SPLIT's rates to the gateways at once for `duration` seconds."""
    loads = [Paced(g.name, g.port, SPLIT[g.name], paced_request(SHARED_HOST)) for g in gateways]
    for load in loads:
        await load.open(8)
    pids = {**{f"gateway {g.name}": [g.process.pid] for g in gateways}, **watched}
    counted = {g.name: -await allowed(g) for g in gateways}
    before = {who: cpu_seconds(p) for who, p in pids.items()}
    client_before, started = own_cpu(), time.monotonic()
    start = asyncio.get_running_loop().time() + 0.1
    await asyncio.gather(*(load.run(start, duration) for load in loads))
    elapsed = time.monotonic() - started
    cpu = {who: 100 * (cpu_seconds(p) - before[who]) / elapsed for who, p in pids.items()}
    cpu["client"] = 100 * (own_cpu() - client_before) / elapsed
    for load in loads:
        load.close()
    for gateway in gateways:
        counted[gateway.name] += await allowed(gateway)
    return Phase(name, loads, duration, cpu, counted)


# -- rendering --------------------------------------------------------------------------------


def render_shared(phases: list[Phase]) -> str:
    lines = [
        "| limit | gateway | offered req/s | achieved req/s | sent | admitted (2xx) | 429 "
        "| other | allowed as the gateway counted | send lag p99 / max ms | connections "
        "| gateway CPU % |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for phase in phases:
        for load in phase.loads:
            ok = sum(n for s, n in load.statuses.items() if 200 <= s < 300)
            limited = load.statuses.get(429, 0)
            other = load.sent - ok - limited
            lags = sorted(load.lags)
            p99 = lags[int(0.99 * (len(lags) - 1))] * 1000
            lines.append(
                f"| {phase.name} | {load.name} | {load.rate:.0f} | {load.sent / load.span:.1f} "
                f"| {load.sent} | {ok} | {limited} | {other} | {phase.counted[load.name]} "
                f"| {p99:.1f} / {lags[-1] * 1000:.1f} "
                f"| {load.opened} | {phase.cpu[f'gateway {load.name}']:.0f} |"
            )
        sent = sum(load.sent for load in phase.loads)
        lines.append(
            f"| {phase.name} | **both** | {sum(SPLIT.values())} | "
            f"{sum(load.sent / load.span for load in phase.loads):.1f} | {sent} "
            f"| **{phase.admitted}** | {sum(load.statuses.get(429, 0) for load in phase.loads)} "
            f"| | {sum(phase.counted.values())} | | | |"
        )
    lines += ["", "| limit | client CPU % | nginx CPU % | control plane CPU % |"]
    lines.append("| --- | ---: | ---: | ---: |")
    for phase in phases:
        cpu = phase.cpu
        lines.append(
            f"| {phase.name} | {cpu['client']:.0f} | {cpu['nginx']:.0f} "
            f"| {cpu.get('control plane', 0.0):.0f} |"
        )
    shared = phases[0]
    expected = RATE * shared.duration + BURST
    low, high = expected - 2 * 2 * SLICE, expected  # a slice held, a slice of credit
    margin = SHARED_TARGET * RATE * shared.duration
    met = abs(shared.admitted - expected) <= margin
    lines += [
        "",
        f"- Shared: {shared.admitted} admitted; rate x duration + burst = {expected:.0f}; "
        f"target within {margin:.0f} ({SHARED_TARGET:.0%} of {RATE * shared.duration:.0f}): "
        f"{'met' if met else 'NOT met'}; documented bound [{low:.0f}, {high:.0f}]: "
        f"{'inside' if low <= shared.admitted <= high else 'outside'}.",
    ]
    offered = sum(SPLIT.values())
    split = ", ".join(
        f"{load.name} {n} ({n / max(1, shared.admitted):.0%} of admitted, "
        f"{SPLIT[load.name] / offered:.0%} of the load)"
        for load in shared.loads
        for n in [sum(k for s, k in load.statuses.items() if 200 <= s < 300)]
    )
    lines.append(f"- Shared, per replica: {split}.")
    if len(phases) > 1:
        alone = phases[1]
        lines.append(
            f"- Each alone: {alone.admitted} admitted, {alone.admitted / expected:.2f} x the "
            "shared limit's budget."
        )
    return "\n".join(lines)


def paired_ratios(runs: dict[str, list[Result]]) -> dict[str, list[float]]:
    """Each setting's requests per CPU-second over the same round's "off" window."""
    return {
        name: [
            (r.per_cpu_s or 0.0) / (off.per_cpu_s or 1.0)
            for r, off in zip(results, runs["off"], strict=True)
        ]
        for name, results in runs.items()
    }


def render_throughput(
    rows: dict[str, Result], ratios: dict[str, list[float]], plane_cpu: dict[str, float]
) -> str:
    off = rows["off"]
    lines = [
        "| ApiProduct | req per gateway CPU-s | / off (paired median) | lowest .. highest | rps "
        "| p99 ms | gateway CPU % | load core CPU % (wrk + nginx + control plane) "
        "| of which control plane | non-2xx or errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        bound = " load-bound" if r.load_cpu_percent > LOAD_CORE_BUSY else ""
        mine = ratios[name]
        lines.append(
            f"| {name} | {r.per_cpu_s or 0:.0f} | {statistics.median(mine):.3f} "
            f"| {min(mine):.3f} .. {max(mine):.3f} "
            f"| {r.rps:.0f} | {r.p99_ms:.3f} | {r.cpu_percent or 0:.0f} "
            f"| {r.load_cpu_percent:.0f}{bound} | {plane_cpu[name]:.0f} | {r.errors} |"
        )
    ratio = statistics.median(ratios["keys + limits"])
    unpaired = (rows["keys + limits"].per_cpu_s or 0) / (off.per_cpu_s or 1)
    met = ratio >= 1 - THROUGHPUT_TARGET
    lines += [
        "",
        f"- Keys and limits on keep {ratio:.3f} of off's requests per gateway CPU-second "
        f"(median of {len(ratios['off'])} paired rounds; the ratio of the two medians is "
        f"{unpaired:.3f}); target >= {1 - THROUGHPUT_TARGET:.2f}: {'met' if met else 'NOT met'}.",
    ]
    return "\n".join(lines)


# -- the run ----------------------------------------------------------------------------------


async def measure_throughput(
    api: httpx.AsyncClient,
    gateway: Gateway,
    load: list[int],
    plane_pid: int,
    args: argparse.Namespace,
) -> str:
    """Windows of wrk on one gateway, each setting of ApiProduct `throughput` in turn."""
    headers = (f"{KEY_HEADER}: {KEY}",)
    runs: dict[str, list[Result]] = {setting: [] for setting in SETTINGS}
    plane_cpu: dict[str, list[float]] = {setting: [] for setting in SETTINGS}
    exists = False
    names = list(SETTINGS)
    for turn in range(args.rounds):
        # The order rotates so that no setting always runs first or last in a round.
        for setting in names[turn % len(names) :] + names[: turn % len(names)]:
            plan = SETTINGS[setting]
            if exists:  # through "off", so that a 401 tells the new plan is in force
                (await api.delete(f"{PRODUCTS}/throughput")).raise_for_status()
                await answers([gateway], THROUGHPUT_HOST, THROUGHPUT_PATH, 200)
            exists = plan is not None
            if plan is not None:
                await create(api, PRODUCTS, product("throughput", THROUGHPUT_HOST, plan))
                await answers([gateway], THROUGHPUT_HOST, THROUGHPUT_PATH, 401)
            warm(gateway.port, THROUGHPUT_PATH, args.connections, THROUGHPUT_HOST, headers)
            before = cpu_seconds([plane_pid])
            started = time.monotonic()
            result = wrk(
                gateway.port, THROUGHPUT_PATH, args.connections, args.duration,
                family(gateway.process.pid), load=load, host=THROUGHPUT_HOST, headers=headers,
            )  # fmt: skip
            share = 100 * (cpu_seconds([plane_pid]) - before) / (time.monotonic() - started)
            runs[setting].append(result)
            plane_cpu[setting].append(share)
            print(
                f"{setting:<13} {result.per_cpu_s or 0:8.0f} req/CPU-s {result.rps:8.0f} rps  "
                f"gateway CPU {result.cpu_percent or 0:3.0f}%  "
                f"load core {result.load_cpu_percent:3.0f}% (control plane {share:.0f}%)  "
                f"non-2xx {result.errors}",
                flush=True,
            )
    rows = {name: median(results) for name, results in runs.items()}
    plane = {n: statistics.median(v) for n, v in plane_cpu.items()}
    return render_throughput(rows, paired_ratios(runs), plane)


async def profile(
    api: httpx.AsyncClient, gateway: Gateway, folder: Path, args: argparse.Namespace
) -> None:
    """py-spy on gateway A under wrk, keys and limits on, then off: DIR/{limits,off}.txt
    (collapsed stacks, `--native --format raw`; after the measured windows)."""
    folder.mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).parent / "py-spy")
    for name, plan in (("limits", SETTINGS["keys + limits"]), ("off", None)):
        with contextlib.suppress(httpx.HTTPStatusError):
            (await api.delete(f"{PRODUCTS}/throughput")).raise_for_status()
        await answers([gateway], THROUGHPUT_HOST, THROUGHPUT_PATH, 200)
        if plan is not None:
            await create(api, PRODUCTS, product("throughput", THROUGHPUT_HOST, plan))
            await answers([gateway], THROUGHPUT_HOST, THROUGHPUT_PATH, 401)
        load = subprocess.Popen(
            ["taskset", "-c", LOAD_CORE, "wrk", "-t2", f"-c{args.connections}",
             f"-d{PROFILE_S + 2}s", "-H", f"Host: {THROUGHPUT_HOST}", "-H", f"{KEY_HEADER}: {KEY}",
             f"http://127.0.0.1:{gateway.port}{THROUGHPUT_PATH}"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await asyncio.sleep(1)
            subprocess.run(
                [spy, "record", "--pid", str(gateway.process.pid), "--native", "--rate", "250",
                 "--duration", str(PROFILE_S), "--format", "raw",
                 "--output", str(folder / f"{name}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=PROFILE_S + 30,
                check=True,
            )  # fmt: skip
        finally:
            load.kill()
            load.wait()


async def measure_shared(
    api: httpx.AsyncClient,
    children: Children,
    plane: ControlPlaneProcess,
    gateways: list[Gateway],
    nginx: list[int],
    *,
    duration: float,
) -> str:
    """The paced load with the limit shared, then with the control plane gone."""
    await create(api, PRODUCTS, product("shared", SHARED_HOST, SHARED_PLAN))
    await answers(gateways, SHARED_HOST, SHARED_PATH, 401)
    for gateway in gateways:

        async def admitted(gateway: Gateway = gateway) -> bool:
            return await status_of(gateway.port, SHARED_HOST, SHARED_PATH, KEY) == 200

        await until(admitted, f"gateway {gateway.name} admits the key")
    # Not a readiness wait: the permits leased above go back, and the bucket fills.
    await asyncio.sleep(SETTLE_S)
    watched = {"nginx": nginx, "control plane": [plane.pid]}
    phases = [await paced_phase("shared", gateways, duration, watched)]
    print(f"shared: {phases[0].admitted} admitted", flush=True)

    offsets = [g.log.stat().st_size for g in gateways]
    assert plane.process is not None
    children.stop(plane.process)
    for gateway, offset in zip(gateways, offsets, strict=True):

        async def lost(gateway: Gateway = gateway, offset: int = offset) -> bool:
            return "control plane" in gateway.lines_after(offset)

        await until(lost, f"gateway {gateway.name} notices the control plane is gone")
    phases.append(await paced_phase("each alone", gateways, duration, {"nginx": nginx}))
    print(f"each alone: {phases[1].admitted} admitted", flush=True)
    return render_shared(phases)


async def run(args: argparse.Namespace, children: Children, workdir: Path) -> str:
    backend_port = free_port()
    backend = nginx_backend(workdir, backend_port)
    children.processes.append(backend)
    wait_port(backend_port)
    nginx = family(backend.pid)
    state = workdir / "control-plane"
    state.mkdir()
    plane = ControlPlaneProcess(children, state)
    plane.spawn(0)  # inherits this process's core (LOAD_CORE)
    await plane.ready()
    context = ssl.create_default_context(cafile=str(state / "ca" / "trust-bundle.pem"))
    async with httpx.AsyncClient(
        base_url=plane.url,
        verify=context,
        headers={"Authorization": f"Bearer {plane.token}"},
        timeout=10.0,
    ) as api:
        await build_mesh(api, backend_port)
        token = await gateway_token(api, workdir)
        gateways = [start_gateway(children, name, plane, token, workdir) for name in SPLIT]
        await answers(gateways, THROUGHPUT_HOST, THROUGHPUT_PATH, 200)
        sections = [f"machine: {machine()}; hot path {native.describe()}"]
        if not args.shared_only:
            load = [*nginx, plane.pid]
            throughput = await measure_throughput(api, gateways[0], load, plane.pid, args)
            print(throughput, flush=True)
            sections.append(
                f"### Keys and limits on, against off (gateway A, wrk -c{args.connections}, "
                f"{args.rounds} rounds of one {args.duration} s window per setting, order "
                "rotating, medians)\n\n"
                f"{throughput}"
            )
            if args.profile:
                await profile(api, gateways[0], args.profile, args)
        shared = await measure_shared(
            api, children, plane, gateways, nginx, duration=args.shared_duration
        )
    sections.append(
        f"### {RATE} requests/s (burst {BURST}) shared by two replicas: "
        f"{SPLIT['A']}/s to A, {SPLIT['B']}/s to B, {args.shared_duration:g} s\n\n{shared}"
    )
    return "\n\n".join(sections)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared-duration", type=float, default=30.0, help="seconds")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk window")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of one window per setting")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    parser.add_argument("--profile", type=Path, help="py-spy gateway A into this folder")
    parser.add_argument(
        "--shared-only", action="store_true", help="only the limit shared by two replicas"
    )
    args = parser.parse_args()
    for tool in ("nginx", "wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed")
            return 2

    def give_up(signum: int, _frame: object) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, give_up)
    signal.signal(signal.SIGALRM, give_up)
    signal.alarm(RUN_LIMIT_S)
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    print(f"machine: {machine()}; hot path {native.describe()}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="gossamer-apiproduct-bench-"))
    workdir.chmod(0o755)  # nginx's worker reads the bodies as another user
    children = Children()
    try:
        tables = asyncio.run(run(args, children, workdir))
        print()
        print(tables)
        if args.markdown:
            args.markdown.write_text(tables + "\n", encoding="utf-8")
    finally:
        signal.alarm(0)
        with contextlib.suppress(Exception):
            children.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
