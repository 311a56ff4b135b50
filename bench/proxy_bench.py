"""Proxy throughput and latency: direct, nginx, haproxy and Gossamer in front of one nginx backend.

Usage: python bench/proxy_bench.py [--duration 3] [--rounds 3] [--markdown FILE]
                                   [--only TARGET ...] [--connections N ...] [--pure]

Every target proxies to the same nginx backend (1 worker). Each proxy runs on one core (taskset
-c 0); the backend and wrk share the other. The same wrk load (100 B and 1 KB bodies, 1 and 50
connections) runs against each, and the table gives requests per CPU-second of the proxy (its
utime+stime from /proc/PID/stat before and after each window, all its processes), requests per
second, p50 and p99 latency, the proxy's CPU and peak RSS, and Gossamer's ratios to nginx and
haproxy, per CPU-second first.

Requests per second alone overstate a slower proxy: wrk and the backend share one core, and when
that core is full every proxy's rate is capped by it. So each window also measures the load
core (wrk's CPU from getrusage of the finished child, the backend's from /proc): above
`LOAD_CORE_BUSY` of a core the row is marked `load-bound` and its rps says more about the load
generator than about the proxy; its per-CPU-second figure still holds.

Each target gets `--rounds` runs of `--duration` seconds at each load, taken in turn with the
other targets' (nginx, haproxy, ..., Gossamer, then again), and the table gives each figure's
median over the rounds. This VM drifts by several percent within a minute; taking the targets
in turn puts every one of them through the same drift.

Two more targets are references of another kind. `bare` (bench/bare_proxy.py) is uvloop and
httptools with nothing of a mesh proxy's work: how it compares with nginx is what the HTTP
stack costs, how Gossamer compares with it is what Gossamer's features cost. `relay`
(bench/relay_proxy.py) passes bytes on without reading them: its added latency at one
connection is the floor for any proxy on uvloop. Gossamer runs its hot path as `make` built it
(compiled with mypyc where a C compiler is found; the table says which), or as pure Python
with `--pure`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gossamer.proxy import native

PROXY_CORE = "0"
LOAD_CORE = "1"
BODIES = {"100B": 100, "1KB": 1024}
CONNECTIONS = (1, 50)
LOAD_CORE_BUSY = 90.0
"""Percent of the load core used by wrk and the backend beyond which a window is load-bound."""


@dataclass
class Result:
    """One wrk run against one target."""

    rps: float
    per_cpu_s: float | None
    """Requests per CPU-second of the proxy (rps / the proxy's CPU share of one core)."""
    load_cpu_percent: float
    """wrk's and the backend's CPU over the window, percent of one core (they share core 1)."""
    p50_ms: float
    p99_ms: float
    cpu_percent: float | None
    rss_mb: float | None
    errors: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def nginx_backend(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    for name, size in BODIES.items():
        (workdir / f"body{name}").write_bytes(b"x" * size)
    conf = workdir / "backend.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {workdir}/backend.pid;
error_log {workdir}/backend.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ root {workdir}; }}
  }}
}}
""")
    return subprocess.Popen(
        ["taskset", "-c", LOAD_CORE, "nginx", "-c", str(conf), "-p", str(workdir)]
    )


def nginx_proxy(workdir: Path, port: int, backend: int) -> subprocess.Popen[bytes]:
    conf = workdir / "proxy-nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {workdir}/proxy-nginx.pid;
error_log {workdir}/proxy-nginx.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
""")
    return subprocess.Popen(
        ["taskset", "-c", PROXY_CORE, "nginx", "-c", str(conf), "-p", str(workdir)]
    )


def haproxy(workdir: Path, port: int, backend: int) -> subprocess.Popen[bytes]:
    conf = workdir / "haproxy.cfg"
    conf.write_text(f"""
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend f
  bind 127.0.0.1:{port}
  default_backend b
backend b
  server s1 127.0.0.1:{backend}
""")
    return subprocess.Popen(["taskset", "-c", PROXY_CORE, "haproxy", "-f", str(conf)])


def gossamer_snapshot(port: int, backend: int) -> dict[str, object]:
    """10 routes over 3 clusters, with retries and metrics on, as a sidecar would run."""
    clusters = [f"outbound|80||svc{i}.default.svc.cluster.local" for i in range(3)]
    routes = [
        {
            "name": f"route-{i}",
            "match": {"path": {"kind": "prefix", "value": f"/api/v{i}/"}},
            "clusters": [{"cluster": clusters[i % 3]}],
            "timeout": 15.0,
            "retries": {"attempts": 2},
        }
        for i in range(9)
    ]
    routes.append(
        {
            "name": "default",
            "match": {"path": {"kind": "prefix", "value": "/"}},
            "clusters": [{"cluster": clusters[0]}],
            "timeout": 15.0,
            "retries": {"attempts": 2},
        }
    )
    return {
        "version": "bench",
        "listeners": [
            {
                "name": "outbound",
                "address": "127.0.0.1",
                "port": port,
                "role": "outbound",
                "route_table": "outbound",
            }
        ],
        "route_tables": [
            {
                "name": "outbound",
                "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
            }
        ],
        "clusters": [
            {
                "name": name,
                "endpoints": [{"address": "127.0.0.1", "port": backend}],
                "lb_policy": "LEAST_REQUEST",
                "labels": {"service": name.split("|")[-1], "service_name": name.split("|")[-1][:4]},
            }
            for name in clusters
        ],
    }


def gossamer(workdir: Path, port: int, backend: int) -> subprocess.Popen[bytes]:
    bootstrap = workdir / "gossamer.json"
    bootstrap.write_text(json.dumps(gossamer_snapshot(port, backend)))
    exe = str(Path(sys.executable).parent / "gossamer")
    return subprocess.Popen(
        [
            "taskset",
            "-c",
            PROXY_CORE,
            exe,
            "proxy",
            "--bootstrap",
            str(bootstrap),
            "--admin",
            f"127.0.0.1:{free_port()}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def relay(workdir: Path, port: int, backend: int) -> subprocess.Popen[bytes]:
    """bench/relay_proxy.py: bytes passed on unread, the latency floor of a uvloop process."""
    del workdir
    return reference("relay_proxy.py", port, backend)


def bare(workdir: Path, port: int, backend: int) -> subprocess.Popen[bytes]:
    """bench/bare_proxy.py: uvloop and httptools with nothing else, the floor of the stack."""
    del workdir
    return reference("bare_proxy.py", port, backend)


def reference(script: str, port: int, backend: int) -> subprocess.Popen[bytes]:
    """One of the reference proxies beside this script, on the proxies' core."""
    path = str(Path(__file__).with_name(script))
    return subprocess.Popen(
        ["taskset", "-c", PROXY_CORE, sys.executable, path, str(port), str(backend)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(processes: list[subprocess.Popen[bytes]], workdir: Path) -> None:
    """SIGTERM to every process started (SIGKILL after 10 s), and the work folder removed."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
    shutil.rmtree(workdir, ignore_errors=True)


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError):
            pass
    return total


def peak_rss_mb(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def family(pid: int) -> list[int]:
    """A process and its children (nginx's master and worker)."""
    found = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        found.extend(family(int(child)))
    return found


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if found is None:
        raise ValueError(f"wrk printed a latency I cannot read: {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def warm(
    port: int, path: str, connections: int, host: str | None = None, headers: Sequence[str] = ()
) -> None:
    """A second of the load before the measured runs: connections open, caches filled."""
    subprocess.run(
        ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", "-d1s",
         *(("-H", f"Host: {host}") if host else ()), *header_args(headers),
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        check=True,
    )  # fmt: skip


def header_args(headers: Sequence[str]) -> list[str]:
    """wrk's arguments for extra request headers."""
    return [arg for header in headers for arg in ("-H", header)]


def children_cpu() -> float:
    """User+system seconds of this process's finished children (wrk, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk(
    port: int,
    path: str,
    connections: int,
    duration: int,
    pids: list[int],
    *,
    load: list[int],
    host: str | None = None,
    headers: Sequence[str] = (),
) -> Result:
    """One window of wrk; `pids` are the proxy's processes, `load` the backend's; `headers`
    ("name: value") go with every request."""
    threads = 1 if connections == 1 else 2
    before = cpu_seconds(pids)
    load_before = cpu_seconds(load) + children_cpu()
    started = time.monotonic()
    out = subprocess.run(
        [
            "taskset",
            "-c",
            LOAD_CORE,
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            *(("-H", f"Host: {host}") if host else ()),
            *header_args(headers),
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    elapsed = time.monotonic() - started
    used = cpu_seconds(pids) - before
    load_used = cpu_seconds(load) + children_cpu() - load_before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return Result(
        rps,
        rps * elapsed / used if pids and used > 0 else None,
        100.0 * load_used / elapsed,
        p50,
        p99,
        100.0 * used / elapsed if pids else None,
        peak_rss_mb(pids) if pids else None,
        errors,
    )


def paired_ratios(runs: dict[str, list[Result]], base: str) -> dict[str, list[float]]:
    """Each setting's requests per CPU-second over the same round's `base` window: a machine
    that drifts between rounds moves both sides of a ratio together."""
    return {
        name: [
            (r.per_cpu_s or 0.0) / (reference.per_cpu_s or 1.0)
            for r, reference in zip(results, runs[base], strict=True)
        ]
        for name, results in runs.items()
    }


def median(results: list[Result]) -> Result:
    """Each figure's median over the rounds; the peak RSS is the highest, errors add up."""
    cpus = [r.cpu_percent for r in results if r.cpu_percent is not None]
    rss = [r.rss_mb for r in results if r.rss_mb is not None]
    per_cpu = [r.per_cpu_s for r in results if r.per_cpu_s is not None]
    return Result(
        statistics.median(r.rps for r in results),
        statistics.median(per_cpu) if per_cpu else None,
        statistics.median(r.load_cpu_percent for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        statistics.median(cpus) if cpus else None,
        max(rss) if rss else None,
        sum(r.errors for r in results),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per target and load")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument(
        "--only", choices=["direct", "nginx", "haproxy", "relay", "bare", "gossamer"], nargs="*"
    )
    parser.add_argument(
        "--connections",
        type=int,
        nargs="*",
        choices=CONNECTIONS,
        help="run only these connection counts (default: all)",
    )
    parser.add_argument(
        "--pure", action="store_true", help="run Gossamer's hot path as pure Python, not compiled"
    )
    args = parser.parse_args()
    if args.pure:
        os.environ[native.PURE_ENV] = "1"  # the Gossamer proxy started below inherits it
    hot_path = "pure Python (--pure)" if args.pure else native.describe()
    for tool in ("nginx", "haproxy", "wrk", "taskset"):
        if shutil.which(tool) is None:
            print(
                f"error: {tool} is not installed (apt-get install -y nginx haproxy wrk util-linux)"
            )
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="gossamer-bench-"))
    workdir.chmod(0o755)  # nginx workers run as an unprivileged user and must read the bodies
    backend_port = free_port()
    processes: list[subprocess.Popen[bytes]] = [nginx_backend(workdir, backend_port)]
    targets: dict[str, tuple[int, list[int]]] = {"direct": (backend_port, [])}
    try:
        wait_port(backend_port)
        load = family(processes[0].pid)
        starts = (
            ("nginx", nginx_proxy),
            ("haproxy", haproxy),
            ("relay", relay),
            ("bare", bare),
            ("gossamer", gossamer),
        )
        for name, start in starts:
            if args.only and name not in args.only:
                continue
            port = free_port()
            process = start(workdir, port, backend_port)
            processes.append(process)
            wait_port(port)
            targets[name] = (port, family(process.pid))
        rows: list[tuple[str, str, int, Result]] = []
        for body in BODIES:
            for connections in args.connections or CONNECTIONS:
                path = f"/body{body}"
                chosen = {n: t for n, t in targets.items() if not args.only or n in args.only}
                for port, _ in chosen.values():
                    warm(port, path, connections)
                runs: dict[str, list[Result]] = {name: [] for name in chosen}
                for _ in range(args.rounds):
                    for name, (port, pids) in chosen.items():
                        runs[name].append(
                            wrk(port, path, connections, args.duration, pids, load=load)
                        )
                for name, results in runs.items():
                    result = median(results)
                    rows.append((body, name, connections, result))
                    per_cpu = f"{result.per_cpu_s:>8.0f}" if result.per_cpu_s else "       -"
                    print(
                        f"{body:>5} c{connections:<3} {name:<9} {per_cpu} req/CPU-s "
                        f"{result.rps:>8.0f} rps  load core {result.load_cpu_percent:3.0f}%  "
                        f"p50 {result.p50_ms:6.3f} ms  p99 {result.p99_ms:6.3f} ms  "
                        f"(median of {len(results)})",
                        flush=True,
                    )
        table = f"Gossamer's hot path: {hot_path}\n\nmachine: {machine()}\n\n{render(rows)}"
        print()
        print(table)
        if args.markdown:
            args.markdown.write_text(table + "\n")
    finally:
        stop(processes, workdir)
    return 0


def machine() -> str:
    """The CPU model and core count (as lscpu names them) and the load average now."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?"
    )
    load = ", ".join(f"{n:.2f}" for n in os.getloadavg())
    return f"{os.cpu_count()} x {model}; load average {load}"


def ratio(mine: float | None, theirs: float | None) -> str:
    return f"{mine / theirs:.2f}" if mine and theirs else "-"


def render(rows: list[tuple[str, str, int, Result]]) -> str:
    lines = [
        "| body | conns | target | req per proxy CPU-s | rps | p50 ms | p99 ms | proxy CPU % "
        "| load core CPU % | proxy peak RSS MB | errors |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by_key = {(b, c, n): r for b, n, c, r in rows}
    for body, name, connections, r in rows:
        per_cpu = f"{r.per_cpu_s:.0f}" if r.per_cpu_s is not None else "-"
        cpu = f"{r.cpu_percent:.0f}" if r.cpu_percent is not None else "-"
        rss = f"{r.rss_mb:.1f}" if r.rss_mb is not None else "-"
        bound = " load-bound" if r.load_cpu_percent > LOAD_CORE_BUSY else ""
        lines.append(
            f"| {body} | {connections} | {name} | {per_cpu} | {r.rps:.0f} | {r.p50_ms:.3f} | "
            f"{r.p99_ms:.3f} | {cpu} | {r.load_cpu_percent:.0f}{bound} | {rss} | {r.errors} |"
        )
    lines.append("")
    lines.append(
        "| body | conns | gossamer/nginx per CPU-s | gossamer/haproxy per CPU-s "
        "| bare/nginx per CPU-s | gossamer/bare per CPU-s | gossamer/nginx rps "
        "| added p50 at c1 vs direct, µs: relay / nginx / haproxy / bare / gossamer |"
    )
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for body in BODIES:
        for connections in CONNECTIONS:
            g = by_key.get((body, connections, "gossamer"))
            n = by_key.get((body, connections, "nginx"))
            h = by_key.get((body, connections, "haproxy"))
            d = by_key.get((body, connections, "direct"))
            b = by_key.get((body, connections, "bare"))
            if g is None:
                continue
            per_cpu = " | ".join(
                ratio(x.per_cpu_s if x else None, y.per_cpu_s if y else None)
                for x, y in ((g, n), (g, h), (b, n), (g, b))
            )
            rps = ratio(g.rps, n.rps if n else None)
            # At 50 connections the p50 is queueing, not a hop's latency: compared at 1 only.
            added = " / ".join(
                f"{(r.p50_ms - d.p50_ms) * 1000:.0f}"
                if r is not None and d is not None and connections == 1
                else "-"
                for r in (
                    by_key.get((body, connections, name))
                    for name in ("relay", "nginx", "haproxy", "bare", "gossamer")
                )
            )
            lines.append(f"| {body} | {connections} | {per_cpu} | {rps} | {added} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
