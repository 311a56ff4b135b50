"""Where a proxy's time goes at one connection: its own work between a read and the write it causes.

Usage: python bench/hop_trace.py [--seconds 2] [--only TARGET ...] [--markdown FILE]

At one connection a request's latency is a chain: wrk writes, the proxy wakes, reads, works,
writes to the backend, sleeps; the backend answers; the proxy wakes, reads, works, writes back.
Most of the chain is the kernel's (loopback TCP and waking a sleeping core), the same for every
proxy. This script measures the part that is the proxy's own: it runs the load of
bench/proxy_bench.py at one connection against each target (nginx, haproxy, relay, bare and
Gossamer, in front of the same nginx backend) while `perf record` traces the proxy's system
calls, and gives, for each direction, the median time from the end of the read that brought the
bytes to the start of the write that passed them on; and the system calls per request.

Needs perf (Debian: apt-get install -y linux-perf) and root, or a perf_event_paranoid that
lets a user trace. perf adds its own cost to each system call, the same for every target, so
compare the targets with each other, not with proxy_bench.py's latencies.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

# bench/ is this script's folder, hence on sys.path.
import proxy_bench as pb

from gossamer.proxy import native

READS = {0: "read", 17: "pread", 45: "recvfrom"}
WRITES = {1: "write", 20: "writev", 44: "sendto"}
EVENT = re.compile(r"^\s*(\d+)\s+([\d.]+):\s+raw_syscalls:sys_(enter|exit):\s+NR (\d+) (.*)$")


def trace(port: int, pids: list[int], seconds: float, workdir: Path) -> str:
    """perf script output for the proxy's system calls during `seconds` of wrk at c1."""
    url = f"http://127.0.0.1:{port}/body100B"
    pb.warm(port, "/body100B", 1)
    load = subprocess.Popen(
        ["taskset", "-c", pb.LOAD_CORE, "wrk", "-t1", "-c1", f"-d{int(seconds) + 2}s", url],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(1)
        data = workdir / f"{port}.perf"
        subprocess.run(
            ["perf", "record", "-q", "-e", "raw_syscalls:sys_enter", "-e",
             "raw_syscalls:sys_exit", "-o", str(data), "-p", ",".join(map(str, pids)),
             "--", "sleep", str(seconds)],
            capture_output=True,
            check=True,
        )  # fmt: skip
    finally:
        load.wait()
    return subprocess.run(
        ["perf", "script", "--ns", "-i", str(data), "-F", "tid,time,event,trace"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def analyse(script: str) -> tuple[list[float], list[float], float, int]:
    """Read-to-write times (µs) of the request's way and of the response's, system calls per
    request, requests seen. The request's way is the one whose reads are smaller (a GET against
    a head and a body)."""
    read_fd: dict[int, int] = {}
    last_read: dict[int, tuple[float, int]] = {}
    spans: dict[int, list[float]] = {}
    sizes: dict[int, list[int]] = {}
    calls: Counter[int] = Counter()
    for line in script.splitlines():
        match = EVENT.match(line)
        if match is None:
            continue
        tid, at, kind, number, rest = (
            int(match[1]), float(match[2]), match[3], int(match[4]), match[5]
        )  # fmt: skip
        if kind == "enter":
            calls[number] += 1
            if number in READS:
                read_fd[tid] = int(rest.strip("() ").split(",")[0], 16)
            elif number in WRITES and tid in last_read:
                started, fd = last_read.pop(tid)
                spans.setdefault(fd, []).append((at - started) * 1e6)
        elif number in READS and tid in read_fd:
            size = int(rest.rsplit("=", 1)[-1])
            if size > 0:
                last_read[tid] = (at, read_fd[tid])
                sizes.setdefault(read_fd[tid], []).append(size)
    # The two busiest connections are the client's and the upstream's.
    busiest = sorted(spans, key=lambda fd: len(spans[fd]), reverse=True)[:2]
    if len(busiest) < 2:
        return [], [], 0.0, 0
    request, response = sorted(busiest, key=lambda fd: statistics.median(sizes[fd]))
    requests = min(len(spans[request]), len(spans[response]))
    total = sum(calls.values())
    return spans[request], spans[response], total / requests, requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="traced seconds per target")
    parser.add_argument(
        "--only", choices=["nginx", "haproxy", "relay", "bare", "gossamer"], nargs="*"
    )
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    for tool in ("perf", "nginx", "haproxy", "wrk", "taskset"):
        if shutil.which(tool) is None:
            print(
                f"error: {tool} is not installed (apt-get install -y linux-perf nginx haproxy wrk)"
            )
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="gossamer-trace-"))
    workdir.chmod(0o755)
    backend_port = pb.free_port()
    processes = [pb.nginx_backend(workdir, backend_port)]
    starts = {
        "nginx": pb.nginx_proxy,
        "haproxy": pb.haproxy,
        "relay": pb.relay,
        "bare": pb.bare,
        "gossamer": pb.gossamer,
    }
    rows = []
    try:
        pb.wait_port(backend_port)
        for name, start in starts.items():
            if args.only and name not in args.only:
                continue
            port = pb.free_port()
            process = start(workdir, port, backend_port)
            processes.append(process)
            pb.wait_port(port)
            request, response, calls, requests = analyse(
                trace(port, pb.family(process.pid), args.seconds, workdir)
            )
            if not requests:
                print(f"{name}: no request traced (is perf allowed to trace this process?)")
                return 1
            there, back = statistics.median(request), statistics.median(response)
            rows.append((name, there, back, calls, requests))
            print(
                f"{name:<9} request {there:5.1f} µs  response {back:5.1f} µs  "
                f"{calls:4.1f} syscalls/req  ({requests} requests)",
                flush=True,
            )
    finally:
        pb.stop(processes, workdir)
    lines = [
        f"Gossamer's hot path: {native.describe()}",
        "",
        "| target | request: read to write (µs) | response: read to write (µs) | both (µs) "
        "| system calls per request | requests traced |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, first, second, calls, requests in rows:
        lines.append(
            f"| {name} | {first:.1f} | {second:.1f} | {first + second:.1f} | {calls:.1f} "
            f"| {requests} |"
        )
    table = "\n".join(lines)
    print()
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
