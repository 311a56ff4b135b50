"""Cold start of `gossamer up --detach` on examples/hello, against the bare app processes.

Mesh: from running the command to its return, which happens once every process is ready (the
control plane, DNS, VIP proxy, gateway, four sidecars and four apps). Reference, in the same
invocation: the same four app processes started directly, until each answers /healthz. The
ratio says what the mesh adds to a cold start. Each is run `--runs` times; medians are shown.

    .venv/bin/python bench/up_bench.py --runs 5 --markdown bench/results-up.md
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "hello"
APPS = [
    ("frontend", "hello.frontend", {}),
    ("greeter-v1-0", "hello.greeter", {"GREETER_VERSION": "v1"}),
    ("greeter-v1-1", "hello.greeter", {"GREETER_VERSION": "v1"}),
    ("greeter-v2-0", "hello.greeter", {"GREETER_VERSION": "v2"}),
]


def mesh_once(workdir: Path) -> float:
    """Seconds from `up --detach` to its return (all ready); then `down`."""
    folder = workdir / "hello"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns(".gossamer", "__pycache__"))
    command = [sys.executable, "-m", "gossamer"]
    began = time.perf_counter()
    subprocess.run([*command, "up", ".", "--detach"], cwd=folder, check=True, capture_output=True)
    took = time.perf_counter() - began
    subprocess.run([*command, "down"], cwd=folder, check=True, capture_output=True, timeout=90)
    return took


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=0.5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def bare_once() -> float:
    """Seconds from starting the four apps directly until each answers /healthz."""
    ports = [free_port() for _ in APPS]
    began = time.perf_counter()
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=EXAMPLE,
            env={**os.environ, **extra, "PORT": str(port), "PYTHONPATH": str(EXAMPLE)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for (_, module, extra), port in zip(APPS, ports, strict=True)
    ]
    try:
        waiting = set(ports)
        deadline = began + 30
        while waiting:
            waiting = {port for port in waiting if not healthy(port)}
            if time.perf_counter() > deadline:
                raise TimeoutError(f"apps on {sorted(waiting)} never answered")
            time.sleep(0.01)
        return time.perf_counter() - began
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gossamer-up-bench-") as temporary:
        mesh = [mesh_once(Path(temporary)) for _ in range(args.runs)]
    bare = [bare_once() for _ in range(args.runs)]
    mesh_s, bare_s = statistics.median(mesh), statistics.median(bare)
    rows = [
        ("gossamer up --detach (12 processes)", mesh_s, min(mesh), max(mesh)),
        ("the 4 apps alone (reference)", bare_s, min(bare), max(bare)),
    ]
    lines = [
        f"cold start of examples/hello, median of {args.runs} runs",
        "",
        "| what | median s | min s | max s |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {name} | {m:.2f} | {lo:.2f} | {hi:.2f} |" for name, m, lo, hi in rows),
        "",
        f"mesh / reference: {mesh_s / bare_s:.1f}x; target: mesh <= 5 s "
        f"({'met' if mesh_s <= 5 else 'NOT met'})",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
