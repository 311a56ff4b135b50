"""The gateway's `--workers`: one proxy process against two sharing the port, beside nginx's.

Usage: python bench/workers_bench.py [--duration 5] [--rounds 3] [--connections 50]
                                     [--markdown FILE]

`gossamer proxy --workers 1` and `--workers 2` (SO_REUSEPORT; the snapshot of
bench/proxy_bench.py), and nginx with `worker_processes 1` and `2` (reuseport on its listener
too), all in front of the same nginx backend (1 worker, a 1 KB file). One worker runs pinned to
core 0 as in the other benchmarks; two workers may use both cores (the machine has two), so they
share core 1 with wrk and the backend, and the second worker can only add what those leave
idle. nginx gets the same, so the two ratios, 2 workers over 1, compare how each scales here.

For each: requests per second, requests per CPU-second of the proxy (all its processes:
utime+stime from /proc/PID/stat over each window), how the requests split between the workers
(their CPU shares), and the load's CPU (wrk and the backend). Windows interleaved,
`--rounds` of `--duration` seconds each, medians.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from proxy_bench import (
    PROXY_CORE,
    Result,
    cpu_seconds,
    family,
    free_port,
    gossamer_snapshot,
    machine,
    median,
    nginx_backend,
    stop,
    wait_port,
    warm,
    wrk,
)

from gossamer.proxy import native

PATH = "/body1KB"


def pinned(workers: int) -> list[str]:
    """One worker on the proxies' core; two anywhere."""
    return ["taskset", "-c", PROXY_CORE] if workers == 1 else []


def gossamer(workdir: Path, workers: int, backend: int) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    bootstrap = workdir / f"gossamer-{workers}.json"
    bootstrap.write_text(json.dumps(gossamer_snapshot(port, backend)))
    exe = str(Path(sys.executable).parent / "gossamer")
    process = subprocess.Popen(
        [*pinned(workers), exe, "proxy", "--bootstrap", str(bootstrap), "--admin", "127.0.0.1:0",
         "--workers", str(workers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return port, process


def nginx(workdir: Path, workers: int, backend: int) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    conf = workdir / f"nginx-{workers}.conf"
    conf.write_text(f"""
worker_processes {workers};
daemon off;
pid {workdir}/nginx-{workers}.pid;
error_log {workdir}/nginx-{workers}.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{ proxy_pass http://backend; proxy_http_version 1.1;
                 proxy_set_header Connection ""; }}
  }}
}}
""")
    process = subprocess.Popen(
        [*pinned(workers), "nginx", "-c", str(conf), "-p", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return port, process


def render(rows: dict[str, Result], split: dict[str, str]) -> str:
    lines = [
        "| proxy | req per proxy CPU-s | rps | p99 ms | proxy CPU % | CPU split between workers "
        "(over the run) | load CPU % (wrk + backend) | errors |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r.per_cpu_s or 0:.0f} | {r.rps:.0f} | {r.p99_ms:.3f} "
            f"| {r.cpu_percent or 0:.0f} | {split.get(name, '-')} | {r.load_cpu_percent:.0f} "
            f"| {r.errors} |"
        )
    lines.append("")
    for kind in ("gossamer", "nginx"):
        one, two = rows[f"{kind}, 1 worker"], rows[f"{kind}, 2 workers"]
        lines.append(
            f"- {kind}: 2 workers / 1, rps {two.rps / one.rps:.2f}, per CPU-second "
            f"{(two.per_cpu_s or 0) / (one.per_cpu_s or 1):.2f}"
        )
    return "\n".join(lines)


def cpu_split(pids: list[int], before: dict[int, float]) -> str:
    """Each worker's share of the CPU the workers used since `before`."""
    used = {pid: cpu_seconds([pid]) - before.get(pid, 0.0) for pid in pids}
    total = sum(used.values()) or 1.0
    return " / ".join(f"{100 * u / total:.0f}%" for u in used.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per window")
    parser.add_argument("--rounds", type=int, default=3, help="windows per proxy")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    for tool in ("nginx", "wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed")
            return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    print(f"machine: {machine()}; hot path {native.describe()}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="gossamer-workers-bench-"))
    workdir.chmod(0o755)
    backend_port = free_port()
    processes = [nginx_backend(workdir, backend_port)]
    try:
        wait_port(backend_port)
        load = family(processes[0].pid)
        ports: dict[str, tuple[int, int]] = {}
        for kind, start in (("gossamer", gossamer), ("nginx", nginx)):
            for workers in (1, 2):
                port, process = start(workdir, workers, backend_port)
                processes.append(process)
                wait_port(port)
                ports[f"{kind}, {workers} worker{'s' if workers > 1 else ''}"] = (port, process.pid)
        for port, _ in ports.values():
            warm(port, PATH, args.connections)
        # Workers exist once the port answers; nginx's master and Gossamer's parent do no work.
        pids = {name: family(pid) for name, (_, pid) in ports.items()}
        runs: dict[str, list[Result]] = {name: [] for name in ports}
        split: dict[str, str] = {}
        for _ in range(args.rounds):
            for name, (port, _) in ports.items():
                result = wrk(port, PATH, args.connections, args.duration, pids[name], load=load)
                runs[name].append(result)
                print(
                    f"{name:<20} {result.per_cpu_s or 0:8.0f} req/CPU-s {result.rps:8.0f} rps "
                    f" proxy CPU {result.cpu_percent or 0:3.0f}%  "
                    f"load {result.load_cpu_percent:3.0f}%",
                    flush=True,
                )
        for name, members in pids.items():
            # The parent (nginx's master, Gossamer's --workers parent) first, then the workers.
            split[name] = cpu_split(members[1:], {}) if len(members) > 2 else "-"
        rows = {name: median(results) for name, results in runs.items()}
        table = (
            f"machine: {machine()}; hot path {native.describe()}; {args.rounds} windows of "
            f"{args.duration} s per proxy, {args.connections} connections, medians\n\n"
            + render(rows, split)
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
