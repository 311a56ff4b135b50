"""Opaque TCP throughput through a pair of proxies, with and without mTLS, against direct.

Usage: python bench/tcp_bench.py [--megabytes 256] [--rounds 3] [--markdown FILE]

A source server (this script with `--serve`, its own process, pinned to core 1) answers each
connection by sending `--megabytes` MB as fast as the socket takes them, then closing (the
server speaks first and only: a bulk download). The client, this process (not pinned), reads it
all in 256 KiB `recv_into` calls and times the transfer. Three paths, each `--rounds` times,
interleaved (direct, plaintext pair, mTLS pair, then again):

- direct: client -> source;
- plaintext pair: client -> source-side proxy (an outbound TCP listener, as the VIP proxy has)
  -> destination sidecar (an inbound TCP listener) -> source;
- mTLS pair: the same two proxies, the first originating mTLS and checking the sidecar's
  SPIFFE id, the sidecar's listener STRICT, certificates from a mesh CA made in a temporary
  folder.

Each proxy is its own `python -m gossamer.proxy.runner --bootstrap ...` process; the first is
pinned to core 0, the sidecar to core 1 with the source. CPU is each proxy's run time over the
transfer from the scheduler (/proc/PID/task/*/schedstat). The table gives the median round's
throughput (MB/s, 1 MB = 10^6 bytes) and MB moved per CPU-second of both proxies together.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# bench/ is this script's folder, hence on sys.path.
from mtls_bench import Sidecar, cpu_seconds, issue, start_sidecar, stop
from proxy_bench import free_port, wait_port

from gossamer.proxy import native
from gossamer.security.ca import CertificateAuthority
from gossamer.security.spiffe import spiffe_id
from gossamer.snapshot import (
    Cluster,
    Endpoint,
    InboundMtls,
    Listener,
    Node,
    Security,
    Snapshot,
    TcpRoute,
    WeightedCluster,
)

CHUNK = 256 * 1024
SIDECAR_ID = spiffe_id("cluster.local", "default", "source")
CALLER_ID = spiffe_id("cluster.local", "default", "caller")


def serve(port: int, size: int) -> None:
    """The source: each connection gets `size` bytes, then the end."""
    import uvloop  # noqa: PLC0415

    block = b"x" * CHUNK

    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        left = size
        with contextlib.suppress(ConnectionError):
            while left > 0:
                writer.write(block[: min(CHUNK, left)])
                left -= CHUNK
                await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(send, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


def tcp_listener(name: str, cluster: str, *, inbound: bool, mtls: bool) -> Listener:
    return Listener(
        name,
        "127.0.0.1",
        0,
        "inbound" if inbound else "outbound",
        "",
        mtls=InboundMtls(mode="STRICT") if inbound and mtls else None,
        tcp=TcpRoute(clusters=(WeightedCluster(cluster=cluster),)),
    )


def sidecar_snapshot(source: int, mtls: bool, roots: tuple[str, ...]) -> Snapshot:
    app = Cluster(name="inbound|9000||", endpoints=(Endpoint("127.0.0.1", source),))
    return Snapshot(
        version="bench",
        node=Node(workload="source", service_account="source", service="source"),
        listeners=(tcp_listener("inbound|tcp|9000", app.name, inbound=True, mtls=mtls),),
        clusters=(app,),
        security=Security(roots=roots),
    )


def caller_snapshot(sidecar: int, mtls: bool, roots: tuple[str, ...]) -> Snapshot:
    endpoint = Endpoint("127.0.0.1", sidecar, identity=SIDECAR_ID if mtls else "")
    cluster = Cluster(name="outbound|9000||source.default.svc.cluster.local", endpoints=(endpoint,))
    return Snapshot(
        version="bench",
        node=Node(workload="caller", service_account="caller", service="caller"),
        listeners=(tcp_listener("vip|tcp", cluster.name, inbound=False, mtls=mtls),),
        clusters=(cluster,),
        security=Security(roots=roots),
    )


def download(port: int, size: int) -> float:
    """Seconds to read `size` bytes from a new connection to `port` (all of it, or fail)."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    got = 0
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * CHUNK)
        while True:
            count = sock.recv_into(view)
            if not count:
                break
            got += count
    elapsed = time.perf_counter() - started
    if got != size:
        raise RuntimeError(f"read {got} bytes of {size}")
    return elapsed


@dataclass
class Way:
    """One way to the source: the port the client dials, and the proxies on the way."""

    name: str
    port: int
    proxies: tuple[Sidecar, ...] = ()


@dataclass
class Round:
    seconds: float
    cpu: float


def measure(path: Way, size: int) -> Round:
    pids = [proxy.process.pid for proxy in path.proxies]
    before = cpu_seconds(pids)
    seconds = download(path.port, size)
    return Round(seconds, cpu_seconds(pids) - before)


def render(results: dict[str, list[Round]], size: int) -> str:
    megabytes = size / 1e6
    lines = [
        "| path | MB/s (median round) | each round MB/s | proxies' CPU s | MB per proxy CPU-s |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for name, rounds in results.items():
        ordered = sorted(rounds, key=lambda r: r.seconds)
        middle = ordered[len(ordered) // 2]
        each = ", ".join(f"{megabytes / r.seconds:.0f}" for r in rounds)
        per_cpu = f"{megabytes / middle.cpu:.0f}" if middle.cpu > 0 else "-"
        cpu = f"{middle.cpu:.2f}" if middle.cpu > 0 else "-"
        lines.append(f"| {name} | {megabytes / middle.seconds:.0f} | {each} | {cpu} | {per_cpu} |")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    size = args.megabytes * 1_000_000
    children: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        try:
            port = free_port()
            command = ["taskset", "-c", "1", sys.executable, __file__, "--serve", str(port)]
            children.append(subprocess.Popen([*command, str(size)]))
            wait_port(port)
            ca = CertificateAuthority.load_or_create(folder / "ca")
            sidecar_identity = (*issue(ca, SIDECAR_ID, "source", folder / "s"), SIDECAR_ID)
            caller_identity = (*issue(ca, CALLER_ID, "caller", folder / "c"), CALLER_ID)
            paths = [Way("direct", port)]
            for mtls in (False, True):
                label = "mTLS pair" if mtls else "plaintext pair"
                tag = "mtls" if mtls else "plain"
                sidecar = start_sidecar(
                    folder / f"sidecar-{tag}",
                    sidecar_snapshot(port, mtls, ca.roots),
                    "1",
                    sidecar_identity,
                    children,
                )
                caller = start_sidecar(
                    folder / f"caller-{tag}",
                    caller_snapshot(sidecar.ports["inbound|tcp|9000"], mtls, ca.roots),
                    "0",
                    caller_identity,
                    children,
                )
                paths.append(Way(label, caller.ports["vip|tcp"], (caller, sidecar)))
            for path in paths:
                download(path.port, size)  # warm-up
            results: dict[str, list[Round]] = {path.name: [] for path in paths}
            for _ in range(args.rounds):
                for path in paths:
                    results[path.name].append(measure(path, size))
        finally:
            for child in children:
                stop(child)
    table = render(results, size)
    machine = (
        f"{args.megabytes} MB per transfer, {args.rounds} rounds; nproc={os.cpu_count()}; "
        f"hot path {native.describe()}; median round of each path shown"
    )
    print(table)
    print(machine)
    through_mtls = statistics.median(r.seconds for r in results["mTLS pair"])
    direct = statistics.median(r.seconds for r in results["direct"])
    print(f"mTLS pair against direct: {through_mtls / direct:.1f}x the time")
    if args.markdown is not None:
        args.markdown.write_text(table + "\n\n" + machine + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
