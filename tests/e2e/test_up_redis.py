"""`gossamer up` of a real Redis (Debian's redis-server) as an opaque TCP service: redis-cli
reaches it at its VIP, the hop between proxies is mTLS (a STRICT PeerAuthentication, and a
plaintext client straight at the sidecar is refused), an AuthorizationPolicy DENY for the
callers' namespace closes connections until it is deleted, and both ends count Istio's TCP
metrics. Beside it, a service whose server speaks first greets a client that has sent nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tests.e2e.test_up_hello import gossamer
from tests.e2e.test_up_kubernetes import _mesh, _resolve, _up

DENY = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-vip-callers
  namespace: data
spec:
  selector:
    matchLabels: {app: redis}
  action: DENY
  rules:
    - from:
        - source:
            namespaces: ["istio-system"]
"""


def redis_cli() -> str:
    """redis-cli, installed with redis-server from Debian's packages when missing (as root)."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip(
                "needs redis-server and redis-cli: apt-get install redis-server redis-tools"
            )
        installed = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "redis-server", "redis-tools"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        if installed.returncode != 0:
            pytest.skip(f"redis-server could not be installed: {installed.stderr[-300:]}")
    found = shutil.which("redis-cli")
    assert found is not None
    return found


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Path]:
    redis_cli()
    yield from _mesh(tmp_path, "redis")


def cli(host: str, port: int, *command: str) -> tuple[int, str]:
    """One redis-cli command: its exit status and what it printed (an error on stderr)."""
    done = subprocess.run(
        [redis_cli(), "-h", host, "-p", str(port), *command],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    return done.returncode, (done.stdout + done.stderr).strip()


def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.3)


def answers(host: str, port: int) -> bool:
    return cli(host, port, "PING") == (0, "PONG")


def tcp_metric(folder: Path, name: str, *needles: str) -> int:
    """A TCP metric summed over every proxy's /stats/prometheus, for series with the needles."""
    listed = gossamer("proxy-status", "-o", "json", cwd=folder)
    assert listed.returncode == 0, listed.stderr
    total = 0
    for item in json.loads(listed.stdout):
        if not item.get("admin"):
            continue
        text = httpx.get(f"http://{item['admin']}/stats/prometheus", timeout=5).text
        for line in text.splitlines():
            if line.startswith(name + "{") and all(needle in line for needle in needles):
                total += int(float(line.rsplit(" ", 1)[1]))
    return total


def greeting(host: str, port: int) -> bytes:
    """What a server-speaks-first service says before the client sends a byte, then its answer
    to one line; b"" when the connection ends first."""
    try:
        with socket.create_connection((host, port), timeout=5) as sock:
            stream = sock.makefile("rwb")
            first = stream.readline()
            stream.write(b"HELO mesh\r\n")
            stream.flush()
            return first + stream.readline()
    except OSError:
        return b""


def sidecar_port(folder: Path) -> int:
    """The port redis' sidecar takes `tcp-redis` on, from its WorkloadEntry's ports."""
    listed = gossamer(
        "get", "workloadentries", "-n", "data", "-l", "app=redis", "-o", "json", cwd=folder
    )
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)["items"]
    return int(entry["spec"]["ports"]["tcp-redis"])


def test_redis_through_the_mesh_with_mtls_authorization_and_tcp_metrics(redis: Path) -> None:
    up = _up(redis)
    vip = _resolve(up, "redis.data.svc.cluster.local")
    until(lambda: answers(vip, 6379), "redis answers PING at its VIP")
    assert cli(vip, 6379, "SET", "greeting", "hello from the mesh") == (0, "OK")
    assert cli(vip, 6379, "GET", "greeting") == (0, "hello from the mesh")
    status, info = cli(vip, 6379, "INFO", "server")
    assert status == 0 and re.search(r"redis_version:\d", info), info

    banner = _resolve(up, "banner.data.svc.cluster.local")
    until(lambda: greeting(banner, 2525) != b"", "the banner service greets")
    assert greeting(banner, 2525) == b"220 banner-0 ready\r\n250 HELO mesh\r\n"

    # STRICT: the sidecar takes only mTLS; a plaintext client at its port gets nothing.
    status, said = cli("127.0.0.1", sidecar_port(redis), "PING")
    assert "PONG" not in said, said

    security = 'connection_security_policy="mutual_tls"'
    destination = ('reporter="destination"', 'destination_service_name="redis"', security)
    source = ('reporter="source"', 'destination_service_name="redis"', security)
    until(
        lambda: tcp_metric(redis, "istio_tcp_connections_opened_total", *destination) >= 4,
        "the sidecar counted the connections",
    )
    assert tcp_metric(redis, "istio_tcp_connections_opened_total", *source) >= 4
    assert tcp_metric(redis, "istio_tcp_received_bytes_total", *destination) > 0
    assert tcp_metric(redis, "istio_tcp_sent_bytes_total", *source) > len("hello from the mesh")
    until(
        lambda: tcp_metric(redis, "istio_tcp_connections_closed_total", *destination) >= 4,
        "closed connections counted",
    )

    # The VIP proxy calls with its own identity (namespace istio-system): deny that namespace.
    policy = redis / "deny.yaml"
    policy.write_text(DENY)
    applied = gossamer("apply", "-f", str(policy), cwd=redis)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    until(lambda: not answers(vip, 6379), "the DENY policy closes connections")
    assert "PONG" not in cli(vip, 6379, "PING")[1]
    deleted = gossamer("delete", "-f", str(policy), cwd=redis)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    until(lambda: answers(vip, 6379), "allowed again once the policy is gone")
    assert cli(vip, 6379, "GET", "greeting") == (0, "hello from the mesh")
    assert gossamer("down", cwd=redis).returncode == 0
