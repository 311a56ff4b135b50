"""The mesh path against nginx's: wrk -> gateway -> sidecar -> app, with mTLS and without.

Usage: python bench/chain_bench.py [--duration 5] [--rounds 3] [--connections 50]
                                   [--markdown FILE] [--profile DIR]

Four chains of two proxies in front of the same kind of app (nginx, 1 worker, a 1 KB file),
all up at once and loaded in turn:

- mesh, mTLS: `gossamer up` of a small manifest folder made here (two Deployments whose
  container is nginx, their Services, an Ingress routing by host), so the gateway and the
  sidecar run the snapshots the mesh really makes (security policy, telemetry labels, trace
  headers, every span sent to the control plane's built-in receiver as `up` does by default, or
  `--sampling` percent of them, the control plane's scrapes) with their agents and
  certificates. The gateway originates mTLS to the sidecar of `app-mtls`.
- mesh, plaintext: the same mesh's `app-plain`, whose PeerAuthentication is DISABLE.
- nginx, TLS: nginx A (proxy_pass https, proxy_ssl_certificate: a client certificate,
  proxy_ssl_verify against the CA, session reuse, upstream keepalive) -> nginx B (ssl_verify_client
  on) -> its own nginx app. TLS 1.3 both, certificates from a CA made with openssl here.
- nginx, plain: the same two nginx without TLS.

Both proxies of every chain run on core 0 (taskset; the mesh's gateway and sidecar are pinned
after `up` started them); wrk and the apps on core 1. The figure that counts is requests per
CPU-second of the chain: the requests of a window over the CPU time (utime+stime from
/proc/PID/stat, all processes and threads) both proxies used in it. Every window also measures
the load core (wrk and the app): above 90% of a core the row is marked load-bound. Targets take
turns, `--rounds` windows of `--duration` seconds each, and the table gives medians.

With `--profile DIR`, after the measured windows, py-spy (`--native`) records the mesh's gateway
and mTLS sidecar for 10 s under the same load, writes their collapsed stacks to DIR, and prints
where their samples go (bench/chain_profile.py reads the files again).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from proxy_bench import (
    LOAD_CORE,
    LOAD_CORE_BUSY,
    PROXY_CORE,
    Result,
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

PATH = "/body1KB"
READY_DEADLINE_S = 90.0
PROFILE_SECONDS = 10
PROFILE_RATE = 500
GATEWAY_WORKERS_ANNOTATION = "gossamer.dev/gateway-workers"
RECEIVER_PATH = "/telemetry/v1/zipkin/spans"
"""The control plane's built-in span receiver (gossamer.control.telemetry.defaults)."""


@dataclass
class Chain:
    """A chain to load: its port, the Host header it routes by, its proxies' and app's pids."""

    port: int
    host: str | None
    proxies: list[int]
    app: list[int]


# -- the nginx chains ---------------------------------------------------------------------------


def openssl_pki(folder: Path) -> None:
    """A CA, a server certificate for nginx B (DNS chain-b) and a client one for nginx A."""
    folder.mkdir()

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=bench-ca")  # fmt: skip
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        (folder / f"{name}.ext").write_text(
            f"subjectAltName=DNS:chain-b\nextendedKeyUsage={usage}\n"
        )
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
            "-extfile", f"{name}.ext")  # fmt: skip
    for key in folder.glob("*.key"):
        key.chmod(0o644)  # nginx reads them as root before dropping privileges; bench files only


def nginx(workdir: Path, name: str, server: str) -> subprocess.Popen[bytes]:
    """One nginx (1 worker) on the proxies' core with one server block."""
    conf = workdir / f"{name}.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  {server}
}}
""")
    return subprocess.Popen(
        ["taskset", "-c", PROXY_CORE, "nginx", "-c", str(conf), "-p", str(workdir)]
    )


def nginx_chain(
    workdir: Path, app_port: int, *, tls: bool, processes: list[subprocess.Popen[bytes]]
) -> Chain:
    """nginx A -> nginx B -> the app, with mutual TLS between A and B when `tls`."""
    pki = workdir / "pki"
    a_port, b_port = free_port(), free_port()
    tag = "tls" if tls else "plain"
    b_tls = (
        f"ssl_certificate {pki}/server.pem; ssl_certificate_key {pki}/server.key; "
        f"ssl_client_certificate {pki}/ca.pem; ssl_verify_client on; ssl_protocols TLSv1.3;"
        if tls
        else ""
    )
    a_tls = (
        f"proxy_ssl_certificate {pki}/client.pem; proxy_ssl_certificate_key {pki}/client.key; "
        f"proxy_ssl_trusted_certificate {pki}/ca.pem; proxy_ssl_verify on; "
        "proxy_ssl_name chain-b; proxy_ssl_server_name on; proxy_ssl_session_reuse on; "
        "proxy_ssl_protocols TLSv1.3;"
        if tls
        else ""
    )
    keepalive = 'proxy_http_version 1.1; proxy_set_header Connection "";'
    b = nginx(workdir, f"chain-{tag}-b", f"""
  upstream app {{ server 127.0.0.1:{app_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{b_port} {"ssl" if tls else ""} backlog=4096;
    {b_tls}
    location / {{ proxy_pass http://app; {keepalive} }}
  }}""")  # fmt: skip
    processes.append(b)
    a = nginx(workdir, f"chain-{tag}-a", f"""
  upstream b {{ server 127.0.0.1:{b_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{a_port} backlog=4096;
    location / {{ proxy_pass {"https" if tls else "http"}://b; {keepalive} {a_tls} }}
  }}""")  # fmt: skip
    processes.append(a)
    wait_port(b_port)
    wait_port(a_port)
    return Chain(a_port, None, [*family(a.pid), *family(b.pid)], [])


# -- the mesh ------------------------------------------------------------------------------------


APP_CONF = """
worker_processes 1;
daemon off;
pid {workdir}/app-@PORT@.pid;
error_log {workdir}/app-@PORT@.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  server {{ listen 127.0.0.1:@PORT@ backlog=4096; location / {{ root {workdir}; }} }}
}}
"""


def manifests(
    folder: Path, workdir: Path, gateway_workers: int, sampling: tuple[int, float] | None
) -> None:
    """Two nginx apps, their Services, an Ingress by host, and DISABLE for `app-plain`; with
    `sampling` (the control plane's port, a percentage) a Telemetry that samples that share
    into the built-in receiver instead of `up`'s default of every request."""
    folder.mkdir()
    template = workdir / "app.conf.in"
    template.write_text(APP_CONF.format(workdir=workdir))
    # The app's port comes from `up` in $PORT; nginx reads no environment, so it is written in.
    start = (
        f"sed s/@PORT@/$PORT/g {template} > {workdir}/app-$PORT.conf && "
        f"exec taskset -c {LOAD_CORE} nginx -c {workdir}/app-$PORT.conf -p {workdir}"
    )
    docs: list[dict[str, object]] = []
    for app in ("app-mtls", "app-plain"):
        docs.append({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": app},
            "spec": {
                "replicas": 1, "selector": {"matchLabels": {"app": app}},
                "template": {
                    "metadata": {"labels": {"app": app}},
                    "spec": {"serviceAccountName": app, "containers": [{
                        "name": "nginx", "command": ["sh", "-c", start],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": PATH, "port": "http"},
                                           "periodSeconds": 1},
                    }]},
                },
            },
        })  # fmt: skip
        docs.append({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": app},
            "spec": {"selector": {"app": app},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        })  # fmt: skip
    annotations = {GATEWAY_WORKERS_ANNOTATION: str(gateway_workers)} if gateway_workers > 1 else {}
    docs.append({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "bench", "annotations": annotations},
        "spec": {"rules": [
            {"host": f"{app}.bench", "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": app, "port": {"number": 80}}},
            }]}}
            for app in ("app-mtls", "app-plain")
        ]},
    })  # fmt: skip
    docs.append({
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "app-plain"},
        "spec": {"selector": {"matchLabels": {"app": "app-plain"}}, "mtls": {"mode": "DISABLE"}},
    })  # fmt: skip
    if sampling is not None:
        port, percent = sampling
        docs.append({
            "apiVersion": "gossamer.dev/v1alpha1", "kind": "TelemetryProvider",
            "metadata": {"name": "builtin", "namespace": "istio-system"},
            "spec": {"zipkin": {"url": f"https://127.0.0.1:{port}{RECEIVER_PATH}"}},
        })  # fmt: skip
        docs.append({
            "apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
            "metadata": {"name": "mesh-default", "namespace": "istio-system"},
            "spec": {"tracing": [{"providers": [{"name": "builtin"}],
                                  "randomSamplingPercentage": percent}]},
        })  # fmt: skip
    # JSON is YAML: one document per file.
    for i, doc in enumerate(docs):
        (folder / f"{i:02d}.yaml").write_text(json.dumps(doc))


def gossamer_exe() -> str:
    return str(Path(sys.executable).parent / "gossamer")


def mesh_up(folder: Path, gateway_port: int, control_port: int) -> dict[str, dict[str, object]]:
    """`gossamer up --detach` of the folder; its processes by name, from status.json."""
    command = [
        *(gossamer_exe(), "up", str(folder), "--detach", "--gateway-port", str(gateway_port)),
        *("--control-plane-port", str(control_port), "--vip-network", "127.79.0.0/24"),
        *("--ready-timeout", str(READY_DEADLINE_S)),
    ]
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=READY_DEADLINE_S + 30
    )
    if done.returncode != 0:
        raise RuntimeError(f"gossamer up failed:\n{done.stdout}\n{done.stderr}")
    status = json.loads((folder / ".gossamer" / "status.json").read_text())
    rows = status["processes"] if isinstance(status, dict) else status
    return {str(row["name"]): row for row in rows}


def mesh_down(folder: Path) -> None:
    subprocess.run(
        [gossamer_exe(), "down", str(folder)], capture_output=True, timeout=90, check=False
    )


def pin(pids: list[int], core: str) -> None:
    """Move running processes (every thread) to one core."""
    for pid in pids:
        subprocess.run(
            ["taskset", "-a", "-p", "-c", core, str(pid)], check=False, capture_output=True
        )


def mesh_chains(folder: Path, gateway_port: int, control_port: int) -> tuple[dict[str, Chain], int]:
    """The two mesh chains, their proxies pinned to the proxies' core; the mTLS sidecar's pid."""
    processes = mesh_up(folder, gateway_port, control_port)
    gateway = next(int(str(r["pid"])) for r in processes.values() if r["kind"] == "gateway")
    chains: dict[str, Chain] = {}
    sidecar_of_mtls = 0
    for app, name in (("app-mtls", "mesh, mTLS"), ("app-plain", "mesh, plaintext")):
        sidecar = next(
            int(str(r["pid"]))
            for n, r in processes.items()
            if r["kind"] == "sidecar" and n.startswith(app)
        )
        workload = next(
            int(str(r["pid"]))
            for n, r in processes.items()
            if r["kind"] not in ("sidecar", "gateway") and n.startswith(app)
        )
        proxies = [*family(gateway), sidecar]
        pin(proxies, PROXY_CORE)
        chains[name] = Chain(gateway_port, f"{app}.bench", proxies, family(workload))
        if app == "app-mtls":
            sidecar_of_mtls = sidecar
    for chain in chains.values():
        wait_answers(chain)
    return chains, sidecar_of_mtls


def wait_answers(chain: Chain) -> None:
    """Poll the chain until it answers 200 (the gateway may take a moment to learn the route)."""
    deadline = time.monotonic() + READY_DEADLINE_S
    host = ("-H", f"Host: {chain.host}") if chain.host else ()
    url = f"http://127.0.0.1:{chain.port}{PATH}"
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *host, url],
            check=False,
            capture_output=True,
            text=True,
        ).stdout
        if out == "200":
            return
        time.sleep(0.2)
    raise TimeoutError(f"{url} ({chain.host}) does not answer 200")


def rss_mb(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM of a process, MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


# -- profile -------------------------------------------------------------------------------------


def profile(chain: Chain, gateway: int, sidecar: int, folder: Path, connections: int) -> None:
    """py-spy on the gateway and the sidecar under load; collapsed stacks written to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = str(Path(sys.executable).parent / "py-spy")
    load = subprocess.Popen(
        ["taskset", "-c", LOAD_CORE, "wrk", "-t2", f"-c{connections}",
         f"-d{PROFILE_SECONDS + 3}s", "-H", f"Host: {chain.host}",
         f"http://127.0.0.1:{chain.port}{PATH}"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1)
    spies = [
        subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--native",
                "--rate",
                str(PROFILE_RATE),
                "--duration",
                str(PROFILE_SECONDS),
                "--format",
                "raw",
                "--output",
                str(folder / f"{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid, name in ((gateway, "gateway"), (sidecar, "sidecar"))
    ]
    for spy in spies:
        spy.wait(PROFILE_SECONDS + 30)
    load.wait(PROFILE_SECONDS + 30)


# -- the run -------------------------------------------------------------------------------------


def render(rows: dict[str, Result], rss: tuple[float, float], connections: int) -> str:
    lines = [
        "| chain | req per chain CPU-s | CPU µs per request per hop | rps | p50 ms | p99 ms "
        "| chain CPU % | load core CPU % | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        per_cpu = r.per_cpu_s or float("nan")
        bound = " load-bound" if r.load_cpu_percent > LOAD_CORE_BUSY else ""
        lines.append(
            f"| {name} | {per_cpu:.0f} | {1e6 / per_cpu / 2:.1f} | {r.rps:.0f} | {r.p50_ms:.3f} "
            f"| {r.p99_ms:.3f} | {r.cpu_percent or 0:.0f} | {r.load_cpu_percent:.0f}{bound} "
            f"| {r.errors} |"
        )
    lines.append("")
    for mesh, ref in (("mesh, mTLS", "nginx, TLS"), ("mesh, plaintext", "nginx, plain")):
        m, n = rows.get(mesh), rows.get(ref)
        if m and n and m.per_cpu_s and n.per_cpu_s:
            lines.append(
                f"- {mesh} / {ref}, per chain CPU-second: {m.per_cpu_s / n.per_cpu_s:.2f} "
                f"(target >= 0.8); rps: {m.rps / n.rps:.2f} ({connections} connections)"
            )
    lines.append(
        f"- the mTLS sidecar under `up`: RSS {rss[0]:.1f} MB after the load, peak {rss[1]:.1f} "
        "MB (target <= 30)"
    )
    return "\n".join(lines)


ORDER = ("nginx, TLS", "mesh, mTLS", "nginx, plain", "mesh, plaintext")


def start_chains(
    workdir: Path, processes: list[subprocess.Popen[bytes]], args: argparse.Namespace
) -> tuple[dict[str, Chain], int]:
    """The nginx app and the two nginx chains before it, then the mesh; the mTLS sidecar's pid."""
    openssl_pki(workdir / "pki")
    app_port = free_port()
    processes.append(nginx_backend(workdir, app_port))  # writes the body files too
    wait_port(app_port)
    app = family(processes[-1].pid)
    chains: dict[str, Chain] = {}
    for tls in (True, False):
        chain = nginx_chain(workdir, app_port, tls=tls, processes=processes)
        chain.app = app
        chains["nginx, TLS" if tls else "nginx, plain"] = chain
    control_port = free_port()
    sampling = None if args.sampling is None else (control_port, args.sampling)
    manifests(workdir / "mesh", workdir, args.gateway_workers, sampling)
    found, sidecar = mesh_chains(workdir / "mesh", free_port(), control_port)
    chains.update(found)
    return chains, sidecar


def measure(chains: dict[str, Chain], args: argparse.Namespace) -> dict[str, Result]:
    """Each chain in turn, `args.rounds` times; the medians."""
    for name in ORDER:
        warm(chains[name].port, PATH, args.connections, chains[name].host)
    runs: dict[str, list[Result]] = {name: [] for name in ORDER}
    for _ in range(args.rounds):
        for name in ORDER:
            c = chains[name]
            result = wrk(
                c.port, PATH, args.connections, args.duration, c.proxies, load=c.app, host=c.host
            )
            runs[name].append(result)
            print(
                f"{name:<16} {result.per_cpu_s or 0:8.0f} req/chain-CPU-s "
                f"{result.rps:8.0f} rps  chain CPU {result.cpu_percent or 0:3.0f}%  "
                f"load core {result.load_cpu_percent:3.0f}%",
                flush=True,
            )
    return {name: median(results) for name, results in runs.items()}


def stop_all(workdir: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    """`gossamer down` of the mesh, SIGTERM to the nginx (SIGKILL after 10 s), files removed."""
    if (workdir / "mesh").exists():
        mesh_down(workdir / "mesh")
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
    shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per window")
    parser.add_argument("--rounds", type=int, default=3, help="windows per chain")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--profile", type=Path, help="py-spy the mesh's proxies into this folder")
    parser.add_argument("--gateway-workers", type=int, default=1, help="the mesh gateway's")
    parser.add_argument(
        "--sampling",
        type=float,
        help="trace this percentage into the built-in receiver (default: up's, 100)",
    )
    args = parser.parse_args()
    for tool in ("nginx", "wrk", "taskset", "openssl", "curl"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed")
            return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    print(f"machine: {machine()}; hot path {native.describe()}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="gossamer-chain-bench-"))
    workdir.chmod(0o755)  # nginx's workers run unprivileged and read the body there
    processes: list[subprocess.Popen[bytes]] = []
    try:
        chains, sidecar = start_chains(workdir, processes, args)
        rows = measure(chains, args)
        table = (
            f"machine: {machine()}; hot path {native.describe()}; gateway workers "
            f"{args.gateway_workers}; mesh tracing sampling "
            f"{'100 (up default)' if args.sampling is None else args.sampling}%; "
            f"{args.rounds} windows of {args.duration} s per chain, "
            f"{args.connections} connections, medians\n\n"
            + render(rows, rss_mb(sidecar), args.connections)
        )
        print()
        print(table)
        if args.markdown:
            args.markdown.write_text(table + "\n", encoding="utf-8")
        if args.profile:
            mtls = chains["mesh, mTLS"]
            profile(mtls, mtls.proxies[0], sidecar, args.profile, args.connections)
            print(f"profiles in {args.profile}: python bench/chain_profile.py {args.profile}")
    finally:
        stop_all(workdir, processes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
