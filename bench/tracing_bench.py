"""What tracing costs the proxy: requests per CPU-second with tracing off, at 1% and at 100%.

Usage: python bench/tracing_bench.py [--duration 5] [--rounds 9] [--connections 50]
                                     [--markdown FILE] [--one-process]

Three `gossamer proxy --bootstrap` processes run the snapshot of bench/proxy_bench.py (10 routes,
3 clusters, retries, metrics) in front of the same nginx backend (1 worker, a 1 KB file), and
differ only in their telemetry: none (tracing off: trace headers are still continued), Istio's
default 1% sampling, and 100%, the last two exporting Zipkin v2 JSON to a receiver that reads
each POST and answers 202 on a kept connection (bench's own, a few lines of asyncio: a real
socket, a real HTTP exchange, no storage). wrk sends no trace headers, so every request starts
a trace and the proxy draws its sampling decision.

The proxies are pinned to core 0; wrk, nginx and the receiver to core 1. They take turns,
`--rounds` rounds of one `--duration`-second window each, the order rotating from round to
round so that none always runs first or last. The table gives medians of requests per
CPU-second of the proxy (utime+stime from /proc/PID/stat over each window), with the load
core's CPU (wrk, nginx and the receiver) to show it is not the limit, and the spans each proxy
sent and dropped (its own counters). The ratios to tracing off are paired: each round's window
is divided by the same round's "off" window, and the median of those ratios is reported with
their lowest and highest, so that a machine that drifts between rounds (another process waking
up, the CPU's clock) moves both sides of a ratio together.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from proxy_bench import (
    LOAD_CORE,
    LOAD_CORE_BUSY,
    PROXY_CORE,
    Result,
    family,
    free_port,
    gossamer_snapshot,
    machine,
    median,
    nginx_backend,
    paired_ratios,
    stop,
    wait_port,
    warm,
    wrk,
)

from gossamer.proxy import native

PATH = "/body1KB"
TARGET = 0.97
"""Tracing at 1% keeps at least this share of the throughput per CPU-second of tracing off."""

RECEIVER = """
import asyncio, sys

ACCEPTED = b"HTTP/1.1 202 Accepted\\r\\ncontent-length: 0\\r\\n\\r\\n"

async def serve(reader, writer):
    # Keep-alive, as Zipkin and OpenTelemetry collectors are: the proxy keeps its connection.
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            length = 0
            for line in head.split(b"\\r\\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            writer.write(ACCEPTED)
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), limit=1 << 24)
    await server.serve_forever()

asyncio.run(main())
"""


def receiver(port: int) -> subprocess.Popen[bytes]:
    """The Zipkin receiver that discards what it is sent, on the load core."""
    return subprocess.Popen(
        ["taskset", "-c", LOAD_CORE, sys.executable, "-c", RECEIVER, str(port)],
        stdout=subprocess.DEVNULL,
    )


SETTINGS: dict[str, float | None] = {"off": None, "1%": 1.0, "100%": 100.0}
"""Each setting's sampling percentage (None: no tracing at all)."""


def write_config(
    bootstrap: Path, port: int, backend: int, sampling: float | None, zipkin: int, *, version: str
) -> None:
    """The benchmark's snapshot with tracing at `sampling` % (None: off) into `bootstrap`."""
    config = gossamer_snapshot(port, backend)
    config["version"] = version
    if sampling is not None:
        config["telemetry"] = {
            "tracing": {
                "sampling": sampling,
                "provider": {
                    "name": "zipkin",
                    "format": "zipkin",
                    "url": f"http://127.0.0.1:{zipkin}/api/v2/spans",
                },
            }
        }
    bootstrap.write_text(json.dumps(config))


def traced_proxy(
    workdir: Path, name: str, backend: int, sampling: float | None, zipkin: int
) -> tuple[int, int, subprocess.Popen[bytes]]:
    """A Gossamer proxy with the benchmark's snapshot; tracing at `sampling` % (None: off)."""
    port, admin = free_port(), free_port()
    bootstrap = workdir / f"{name}.json"
    write_config(bootstrap, port, backend, sampling, zipkin, version=name)
    exe = str(Path(sys.executable).parent / "gossamer")
    process = subprocess.Popen(
        ["taskset", "-c", PROXY_CORE, exe, "proxy", "--bootstrap", str(bootstrap),
         "--admin", f"127.0.0.1:{admin}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(port)
    return port, admin, process


def switch(process: subprocess.Popen[bytes], admin: int, version: str) -> None:
    """Make the proxy reload its bootstrap file (SIGHUP) and wait until it runs `version`."""
    process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        url = f"http://127.0.0.1:{admin}/config_dump"
        with urllib.request.urlopen(url, timeout=5) as answer:
            if json.loads(answer.read()).get("version") == version:
                return
        time.sleep(0.05)
    raise RuntimeError(f"the proxy did not apply snapshot {version} within 10 s")


def span_counters(admin: int) -> dict[str, float]:
    """The proxy's gossamer_tracing_* series, summed over labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats/prometheus", timeout=5) as r:
        text = r.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("gossamer_tracing_"):
            name, value = line.split("{", 1)[0].split(" ", 1)[0], line.rsplit(" ", 1)[1]
            found[name] = found.get(name, 0.0) + float(value)
    return found


def render(
    rows: dict[str, Result], ratios: dict[str, list[float]], spans: dict[str, dict[str, float]]
) -> str:
    off = rows["off"]
    lines = [
        "| tracing | req per proxy CPU-s | / off (paired median) | lowest .. highest | rps "
        "| p99 ms | proxy CPU % | load core CPU % | spans sent | spans dropped | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        counters = spans.get(name, {})
        bound = " load-bound" if r.load_cpu_percent > LOAD_CORE_BUSY else ""
        mine = ratios[name]
        lines.append(
            f"| {name} | {r.per_cpu_s or 0:.0f} | {statistics.median(mine):.3f} "
            f"| {min(mine):.3f} .. {max(mine):.3f} "
            f"| {r.rps:.0f} | {r.p99_ms:.3f} | {r.cpu_percent or 0:.0f} "
            f"| {r.load_cpu_percent:.0f}{bound} "
            f"| {counters.get('gossamer_tracing_spans_sent_total', 0):.0f} "
            f"| {counters.get('gossamer_tracing_spans_dropped_total', 0):.0f} | {r.errors} |"
        )
    one = statistics.median(ratios["1%"])
    unpaired = (rows["1%"].per_cpu_s or 0) / (off.per_cpu_s or 1)
    lines += [
        "",
        f"- 1% sampling keeps {one:.3f} of tracing off's requests per CPU-second (median of "
        f"{len(ratios['1%'])} paired rounds; the ratio of the two medians is {unpaired:.3f}); "
        f"target >= {TARGET}: {'met' if one >= TARGET else 'NOT met'}",
    ]
    return "\n".join(lines)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per window")
    parser.add_argument(
        "--rounds", type=int, default=9, help="rounds (one window per setting each)"
    )
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument(
        "--one-process",
        action="store_true",
        help="one proxy, switched between the settings by SIGHUP before each window",
    )
    return parser.parse_args()


def main() -> int:
    args = arguments()
    for tool in ("nginx", "wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed")
            return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    print(f"machine: {machine()}; hot path {native.describe()}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="gossamer-tracing-bench-"))
    workdir.chmod(0o755)
    backend_port, zipkin_port = free_port(), free_port()
    processes = [nginx_backend(workdir, backend_port), receiver(zipkin_port)]
    try:
        wait_port(backend_port)
        wait_port(zipkin_port)
        load = [*family(processes[0].pid), processes[1].pid]
        proxies: dict[str, tuple[int, int, list[int]]] = {}
        for name, sampling in SETTINGS.items():
            if args.one_process and proxies:
                proxies[name] = proxies["off"]
                continue
            port, admin, process = traced_proxy(workdir, name, backend_port, sampling, zipkin_port)
            processes.append(process)
            proxies[name] = (port, admin, family(process.pid))
        for port, _, _ in proxies.values():
            warm(port, PATH, args.connections)
        runs: dict[str, list[Result]] = {name: [] for name in proxies}
        names = list(proxies)
        for turn in range(args.rounds):
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                port, admin, pids = proxies[name]
                if args.one_process:
                    version = f"{name}-{turn}"
                    bootstrap = workdir / "off.json"
                    sampling = SETTINGS[name]
                    write_config(
                        bootstrap, port, backend_port, sampling, zipkin_port, version=version
                    )
                    switch(processes[2], admin, version)
                    warm(port, PATH, args.connections)
                result = wrk(port, PATH, args.connections, args.duration, pids, load=load)
                runs[name].append(result)
                print(
                    f"{name:<5} {result.per_cpu_s or 0:8.0f} req/CPU-s {result.rps:8.0f} rps  "
                    f"proxy CPU {result.cpu_percent or 0:3.0f}%  "
                    f"load core {result.load_cpu_percent:3.0f}%",
                    flush=True,
                )
        rows = {name: median(results) for name, results in runs.items()}
        spans = {name: span_counters(admin) for name, (_, admin, _) in proxies.items()}
        if args.one_process:  # one process's counters: every setting's together
            spans = {"100%": spans["100%"]}
        how = "one proxy switched by SIGHUP" if args.one_process else "a proxy per setting"
        table = (
            f"machine: {machine()}; hot path {native.describe()}; {how}; {args.rounds} rounds "
            f"of one {args.duration} s window per setting, order rotating, {args.connections} "
            "connections, medians\n\n" + render(rows, paired_ratios(runs, "off"), spans)
        )
        print()
        print(table)
        if args.markdown:
            args.markdown.write_text(table + "\n", encoding="utf-8")
    finally:
        stop(processes, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
