"""Two versions of the proxy as sidecar pairs at a fixed rate, interleaved: which costs less CPU.

Usage: python bench/sidecar_ab.py OTHER_SRC [--mtls] [--windows 8] [--seconds 5]

OTHER_SRC is the `src` folder of another checkout (`git worktree add /tmp/before HEAD~3`, say);
this checkout's `src` is the other side. Both pairs (client sidecar -> server sidecar -> nginx,
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout's src folder")
    parser.add_argument("--mtls", action="store_true", help="mTLS between the sidecars")
    parser.add_argument("--windows", type=int, default=8, help="measured windows per version")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of a window")
    args = parser.parse_args()
    this = Path(__file__).resolve().parent.parent / "src"
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
        pairs = {}
        for name, src in versions.items():
            os.environ["PYTHONPATH"] = str(src)  # the sidecars are started with it
            pairs[name] = mb.start_pair(
                workdir / name, backend_port, mtls=args.mtls, ca=ca, children=children
            )
        os.environ.pop("PYTHONPATH")
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
            print(f"| {name} ({src}) | {medians[name]:.3f} | {min(cpus):.3f} | {p90:+.3f} |")
        print(f"\nthis / other, median CPU: {medians['this'] / medians['other']:.2f}")
    finally:
        for process in reversed(children):
            mb.stop(process)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
