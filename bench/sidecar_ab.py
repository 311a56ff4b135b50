"""Two versions of the proxy as sidecar pairs at a fixed rate, interleaved: which costs less CPU.

Usage: python bench/sidecar_ab.py [OTHER_SRC] [--other-pure] [--mtls] [--windows 8] [--seconds 5]

OTHER_SRC is the `src` folder of another checkout (`git worktree add /tmp/before HEAD~3`, say);
this checkout's `src` is the other side. With `--other-pure` the other side runs its hot path as
pure Python; without OTHER_SRC, the other side is this checkout as pure Python, which measures
what compiling the hot path saves. Both pairs (client sidecar -> server sidecar -> nginx,
as in bench/mtls_bench.py, whose parts this script uses) run at once; the open-loop load of
1,000 rps goes to one pair at a time, switching every `--seconds` (after 1 s of warm-up) for
`--windows` windows each, in the order A B B A A B ... The cost of the same code varies between
runs on a VM by as much as a hot-path change saves; interleaving both versions within one run
cancels that drift. The table gives each version's median and best CPU of both sidecars per
1,000 rps and median added p90, and this checkout's ratio to the other.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# bench/ is this script's folder, hence on sys.path.
import mtls_bench as mb

from gossamer.security.ca import CertificateAuthority

PURE_ENV = "GOSSAMER_PURE_PYTHON"


def hot_path() -> str:
    """Which hot path a proxy started now (with this environment) runs: compiled, pure, stale."""
    probe = "import gossamer.proxy.native as n; print(n.MODE)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def start_pairs(
    versions: dict[str, Path],
    args: argparse.Namespace,
    workdir: Path,
    backend_port: int,
    *,
    ca: CertificateAuthority,
    children: list[subprocess.Popen[bytes]],
) -> tuple[dict[str, tuple[mb.Sidecar, mb.Sidecar, int]], dict[str, str]]:
    """Each version's sidecar pair (client pid, server pid, port) and the hot path it runs."""
    pairs = {}
    modes = {}
    for name, src in versions.items():
        os.environ["PYTHONPATH"] = str(src)  # the sidecars are started with it
        if name == "other" and args.other_pure:
            os.environ[PURE_ENV] = "1"
        modes[name] = hot_path()
        pairs[name] = mb.start_pair(
            workdir / name, backend_port, mtls=args.mtls, ca=ca, children=children
        )
        os.environ.pop(PURE_ENV, None)
    os.environ.pop("PYTHONPATH")
    return pairs, modes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, nargs="?", help="the other checkout's src folder")
    parser.add_argument(
        "--other-pure", action="store_true", help="the other side's hot path as pure Python"
    )
    parser.add_argument("--mtls", action="store_true", help="mTLS between the sidecars")
    parser.add_argument("--windows", type=int, default=8, help="measured windows per version")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of a window")
    args = parser.parse_args()
    this = Path(__file__).resolve().parent.parent / "src"
    if args.other is None:
        args.other, args.other_pure = this, True
    if not (args.other / "gossamer" / "proxy").is_dir():
        print(f"error: {args.other} is not a src folder with gossamer/proxy in it")
        return 2
    load = argparse.Namespace(rate=1000.0, warmup=1.0, seconds=args.seconds)
    workdir = Path(tempfile.mkdtemp(prefix="gossamer-sidecar-ab-"))
    workdir.chmod(0o755)  # nginx's workers run as an unprivileged user and read the body there
    children: list[subprocess.Popen[bytes]] = []
    versions = {"other": args.other.resolve(), "this": this}
    try:
        backend_port = mb.free_port()
        children.append(mb.nginx_backend(workdir, backend_port))
        mb.wait_port(backend_port)
        backend = mb.nginx_pids(children[-1])
        direct = mb.measure("direct", backend_port, sidecars=None, backend=backend, args=load)
        ca = CertificateAuthority.load_or_create(workdir / "ca")
        pairs, modes = start_pairs(versions, args, workdir, backend_port, ca=ca, children=children)
        seen: dict[str, list[tuple[float, float]]] = {name: [] for name in versions}
        for window in range(args.windows):
            order = ("other", "this") if window % 2 == 0 else ("this", "other")
            for name in order:
                client, server, port = pairs[name]
                row = mb.measure(name, port, sidecars=(client, server), backend=backend, args=load)
                assert row.client_cpu is not None and row.server_cpu is not None
                cpu = row.client_cpu + row.server_cpu
                seen[name].append((cpu, row.p90 - direct.p90))
                print(f"window {window + 1} {name:>5}: {cpu:.3f} vCPU / 1k rps", flush=True)
        kind = "mTLS" if args.mtls else "plaintext"
        print(f"\n{kind} pairs, {args.windows} windows of {args.seconds:.0f} s each\n")
        print("| version | median both vCPU / 1k rps | best | median added p90 ms |")
        print("| --- | ---: | ---: | ---: |")
        medians = {}
        for name, src in versions.items():
            cpus = [cpu for cpu, _ in seen[name]]
            medians[name] = statistics.median(cpus)
            p90 = statistics.median(added for _, added in seen[name])
            label = f"{name} ({src}, {modes[name]})"
            print(f"| {label} | {medians[name]:.3f} | {min(cpus):.3f} | {p90:+.3f} |")
        print(f"\nthis / other, median CPU: {medians['this'] / medians['other']:.2f}")
    finally:
        for process in reversed(children):
            mb.stop(process)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
