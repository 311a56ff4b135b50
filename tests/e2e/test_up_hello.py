"""`gossamer up --detach` on examples/hello, as a user runs it: traffic, canary, a killed
replica, status, logs, and `down` leaving nothing behind."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.resolver
import httpx
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"


def gossamer(*args: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gossamer", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def dig() -> str:
    found = shutil.which("dig")
    if found is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "dnsutils"], check=True)
        found = shutil.which("dig")
    assert found is not None, "dig (dnsutils) is needed"
    return found


def mesh_pids(state: Path) -> list[int]:
    data = json.loads((state / "status.json").read_text())
    return [row["pid"] for row in data["processes"] if row["pid"]]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def hello(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "hello"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns(".gossamer", "__pycache__"))
    yield folder
    up_file = folder / ".gossamer" / "up.json"
    if up_file.exists():  # a failed test must not leave a mesh running
        pid = json.loads(up_file.read_text())["pid"]
        with_timeout = gossamer("down", cwd=folder)
        if with_timeout.returncode != 0 and alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_hello_up_serves_the_canary_survives_a_killed_replica_and_goes_down_clean(
    hello: Path,
) -> None:
    started = time.monotonic()
    result = gossamer("up", ".", "--detach", cwd=hello)
    assert result.returncode == 0, result.stdout + result.stderr
    cold_start = time.monotonic() - started
    up = json.loads((hello / ".gossamer" / "up.json").read_text())
    gateway = up["gateway"]
    assert f"curl {gateway}/" in result.stdout

    with httpx.Client(base_url=gateway, timeout=10.0) as http:
        first = http.get("/", params={"name": "Ada"})
        assert first.status_code == 200, first.text
        assert first.json()["message"] in ("Hello, Ada!", "Howdy, Ada!")
        # The VirtualService's 90/10 split, within a tolerance that 400 draws keep (p < 1e-4).
        versions = Counter(http.get("/").json()["greeter"] for _ in range(400))
        assert set(versions) == {"v1", "v2"}, versions
        assert 16 <= versions["v2"] <= 72, versions

        # Kill a greeter replica under load: retries and the other replica hide it.
        failures: list[str] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=gateway, timeout=10.0) as client:
                while not stop.is_set():
                    response = client.get("/")
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text}")

        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        state = hello / ".gossamer"
        victim = _pid_of(state, "greeter-v1-0")
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        time.sleep(3)
        stop.set()
        for worker in workers:
            worker.join(15)
        assert failures == [], failures[:5]

    # The supervisor restarted it, and `status` says so.
    deadline = time.monotonic() + 20
    while True:
        listed = json.loads(gossamer("status", "-o", "json", cwd=hello).stdout)
        [row] = [p for p in listed["processes"] if p["name"] == "greeter-v1-0"]
        if row["ready"] and row["restarts"] >= 1:
            break
        assert time.monotonic() < deadline, row
        time.sleep(0.2)
    assert "killed by SIGKILL" in row["lastExit"]
    shown = gossamer("status", cwd=hello)
    assert "greeter-v1-0" in shown.stdout and "up:" in shown.stdout
    logs = gossamer("logs", "greeter-v1-0", cwd=hello)
    assert "attempt 2" in logs.stdout

    # The kubectl-style CLI finds this mesh's control plane by itself.
    listed_routes = gossamer("get", "virtualservices", cwd=hello)
    assert "greeter" in listed_routes.stdout, listed_routes.stderr

    # DNS + virtual IPs: a client that resolves through the mesh DNS is intercepted unawares.
    host, port = up["dns"].split(":")
    dug = subprocess.run(
        [dig(), f"@{host}", "-p", port, "+short", "greeter.default.svc.cluster.local"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # 127.77.0.0/16, or the next /16 when another mesh of the host listens there.
    assert len(dug) == 1, dug
    assert ipaddress.ip_address(dug[0]) in ipaddress.ip_network(up["vip_network"]), dug
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = [host], int(port)
    srv = resolver.resolve("_http._tcp.greeter.default.svc.cluster.local", "SRV")
    assert [(r.port, str(r.target)) for r in srv] == [(80, "greeter.default.svc.cluster.local.")]
    assert [r.address for r in resolver.resolve("greeter", "A")] == dug
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("nobody.default.svc.cluster.local", "A")
    through_vip = httpx.get(f"http://{dug[0]}/greet", params={"name": "vip"}, timeout=10.0)
    assert through_vip.json()["greeting"] in ("Hello, vip!", "Howdy, vip!")

    statuses = json.loads(gossamer("proxy-status", "-o", "json", cwd=hello).stdout)
    assert sorted(p["workload"] for p in statuses) == [
        "frontend",
        "gossamer-vip-proxy",
        "greeter-v1",
        "greeter-v1",
        "greeter-v2",
        "istio-ingressgateway",
    ]
    assert {p["state"] for p in statuses} == {"SYNCED"}
    # Every proxy holds a certificate from the mesh CA for its workload's identity.
    assert all(p["certificateExpiry"] > time.time() + 3600 for p in statuses), statuses
    identities = {p["workload"]: p["identity"] for p in statuses}
    assert identities["greeter-v2"] == "spiffe://cluster.local/ns/default/sa/greeter"
    assert identities["frontend"] == "spiffe://cluster.local/ns/default/sa/frontend"
    table = gossamer("proxy-status", cwd=hello).stdout
    assert table.count("23h5") == len(statuses), table

    described = gossamer("describe", "deployment", "greeter-v1", cwd=hello).stdout
    proxies = described.split("Proxies", 1)[1].splitlines()[1:]
    assert len(proxies) == 2 and all("sidecar  SYNCED" in line for line in proxies), described

    # What up started from is what apply compares with: the same files are unchanged.
    same = gossamer("apply", "-f", ".", cwd=hello)
    assert same.stdout.count(" unchanged") == 8 and " configured" not in same.stdout, same.stdout

    # A changed canary, applied while up, takes effect without a restart.
    traffic = hello / "traffic.yaml"
    traffic.write_text(
        traffic.read_text().replace("weight: 90", "weight: 50").replace("weight: 10", "weight: 50")
    )
    applied = gossamer("apply", "-f", "traffic.yaml", cwd=hello)
    assert "virtualservice.networking.istio.io/greeter configured" in applied.stdout, applied.stderr
    with httpx.Client(base_url=gateway, timeout=10.0) as http:
        deadline = time.monotonic() + 10
        while True:
            versions = Counter(http.get("/").json()["greeter"] for _ in range(200))
            if 70 <= versions["v2"] <= 130:
                break
            assert time.monotonic() < deadline, versions

    # Scaling by apply: greeter-v2 gets a second replica, greeter-v1 loses one.
    app = hello / "app.yaml"
    manifest = app.read_text()
    manifest = manifest.replace(
        "name: greeter-v2\nspec:\n  replicas: 1", "name: greeter-v2\nspec:\n  replicas: 2"
    )
    manifest = manifest.replace(
        "name: greeter-v1\nspec:\n  replicas: 2", "name: greeter-v1\nspec:\n  replicas: 1"
    )
    app.write_text(manifest)
    applied = gossamer("apply", "-f", "app.yaml", cwd=hello)
    assert "deployment.apps/greeter-v2 configured" in applied.stdout, (
        applied.stdout + applied.stderr
    )
    deadline = time.monotonic() + 30
    while True:
        rows = {
            p["name"]: p
            for p in json.loads(gossamer("status", "-o", "json", cwd=hello).stdout)["processes"]
        }
        if "greeter-v2-1" in rows and rows["greeter-v2-1"]["ready"] and "greeter-v1-1" not in rows:
            break
        assert time.monotonic() < deadline, sorted(rows)
        time.sleep(0.3)

    pids = [*mesh_pids(state), up["pid"]]
    result = gossamer("down", cwd=hello)
    assert result.returncode == 0, result.stderr
    assert [pid for pid in pids if alive(pid)] == []
    print(f"cold start to all ready: {cold_start:.1f}s")


def _pid_of(state: Path, name: str) -> int:
    data: dict[str, Any] = json.loads((state / "status.json").read_text())
    return int(next(row["pid"] for row in data["processes"] if row["name"] == name))


def test_bad_manifests_stop_up_before_anything_starts(hello: Path) -> None:
    broken = hello / "app.yaml"
    broken.write_text(broken.read_text().replace("containerPort: 8080", "containerPort: 80800", 1))
    result = gossamer("up", ".", "--detach", cwd=hello)
    assert result.returncode == 1
    assert "app.yaml:" in result.stderr and "containerPort" in result.stderr
    assert not (hello / ".gossamer").exists()


def test_a_gateway_port_in_use_is_an_error_naming_the_port_and_its_owner(hello: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = gossamer("up", ".", "--gateway-port", str(port), "--no-view", cwd=hello)
    assert result.returncode == 1
    assert f"port {port} is in use (by PID {os.getpid()}" in result.stderr, result.stderr
