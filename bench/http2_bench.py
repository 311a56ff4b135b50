"""What an HTTP/2 request costs the proxy against an HTTP/1.1 one, per CPU-second of the proxy.

Usage: python bench/http2_bench.py [--requests 60000] [--connections 10] [--streams 1 10]

One Gossamer proxy (the snapshot of bench/proxy_bench.py) in front of one nginx serving 1 KB,
each pinned to its core as proxy_bench.py pins them. wrk drives HTTP/1.1 (50 connections, 5 s);
h2load (Debian's nghttp2-client) drives h2c with prior knowledge, `--connections` connections
with each `--streams` value of concurrent streams per connection. The table gives requests per
second and per CPU-second of the proxy. Upstreams are HTTP/1.1 either way.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# bench/ is this script's folder, hence on sys.path.
import proxy_bench as pb


def measure(pids: list[int], command: list[str], pattern: str) -> tuple[int, float, float]:
    """Requests answered 2xx (read from the tool's output), wall seconds, proxy CPU seconds."""
    cpu_before, started = pb.cpu_seconds(pids), time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    wall, cpu = time.monotonic() - started, pb.cpu_seconds(pids) - cpu_before
    found = re.search(pattern, done.stdout)
    # wrk reports answers that are not 2xx or 3xx; h2load counts them as failed.
    if found is None or "Non-2xx" in done.stdout or re.search(r" [1-9]\d* failed", done.stdout):
        raise RuntimeError(done.stdout)
    return int(found.group(1)), wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60000, help="per h2load run")
    parser.add_argument("--connections", type=int, default=10, help="h2load connections")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 10])
    args = parser.parse_args()
    for tool in ("nginx", "wrk", "h2load"):
        if shutil.which(tool) is None:
            print(f"missing: {tool} (apt-get install nginx wrk nghttp2-client)", file=sys.stderr)
            return 1
    work = Path(tempfile.mkdtemp(prefix="gossamer-h2-bench-"))
    work.chmod(0o755)  # nginx's workers run as another user
    backend, port = pb.free_port(), pb.free_port()
    processes = [pb.nginx_backend(work, backend)]
    try:
        pb.wait_port(backend)
        processes.append(pb.gossamer(work, port, backend))
        pb.wait_port(port)
        pids = pb.family(processes[1].pid)
        url = f"http://127.0.0.1:{port}/body1KB"
        load = ["taskset", "-c", pb.LOAD_CORE]
        rows = [
            (
                "HTTP/1.1, wrk, 50 connections",
                measure(pids, [*load, "wrk", "-t1", "-c50", "-d5s", url], r"(\d+) requests in"),
            )
        ]
        for streams in args.streams:
            command = [*load, "h2load", "-n", str(args.requests), "-c", str(args.connections)]
            command += ["-m", str(streams), url]
            label = f"HTTP/2, h2load, {args.connections} connections x {streams} streams"
            rows.append((label, measure(pids, command, r"(\d+) succeeded")))
    finally:
        pb.stop(processes, work)
    print("| client | requests per s | requests per proxy CPU-s |")
    print("| --- | ---: | ---: |")
    for label, (requests, wall, cpu) in rows:
        print(f"| {label} | {requests / wall:.0f} | {requests / cpu:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
