"""The control plane killed under load on a mesh from `gossamer up`, its port taken meanwhile by
another process: no credential reaches that process, nothing counts it as the control plane,
the CLI refuses it by name, the proxies keep serving, and the control plane that comes back
(after longer down than the registry's TTL) withdraws no endpoint: no request fails."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from .test_up_hello import _pid_of, gossamer, hello  # noqa: F401 - the fixture

ACCESS_LOG = """\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: envoy}]}]
"""

INSTANCE_TTL_S = 10.0
"""The TTL of an instance whose proxy is gone (`up --instance-ttl`; 30 s by default)."""
RESTART_GRACE_S = 15.0
"""After a start, the control plane collects nothing for this long (MeshSettings)."""


class Impostor:
    """A plain TCP server on the control plane's port that keeps every byte it is sent and
    answers anything with `200 OK`, as a careless readiness check would like."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received = bytearray()
        self.connections = 0
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def bind(self, timeout: float) -> None:
        """Take the port as soon as the killed control plane's socket is gone."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._listener.bind(("127.0.0.1", self.port))
                break
            except OSError:
                assert time.monotonic() < deadline, "the killed control plane kept its port"
                time.sleep(0.005)
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._answer, args=(client,), daemon=True).start()

    def _answer(self, client: socket.socket) -> None:
        client.settimeout(2.0)
        with client:
            try:
                data = client.recv(65536)
                self.received += data
                client.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                while data := client.recv(65536):
                    self.received += data
            except OSError:
                pass


class Load:
    """Requests one after another through the gateway (gateway -> frontend -> greeter)."""

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        with httpx.Client(base_url=self.gateway, timeout=10.0) as client:
            while not self._stop.is_set():
                # The wall-clock time, to find the request in the proxies' access logs.
                at = time.strftime("%H:%M:%S")
                try:
                    response = client.get("/")
                except httpx.HTTPError as error:
                    self.failures.append(f"{at} {type(error).__name__}: {error}")
                    continue
                if response.status_code == 200:
                    self.ok += 1
                else:
                    request_id = response.headers.get("x-request-id", "")
                    self.failures.append(
                        f"{at} {response.status_code} {response.text[:200]} {request_id}"
                    )
                time.sleep(0.01)


def control_plane_row(folder: Path) -> dict[str, Any]:
    listed = json.loads(gossamer("status", "-o", "json", cwd=folder).stdout)
    [row] = [p for p in listed["processes"] if p["name"] == "control-plane"]
    return row


def wait_for(folder: Path, what: str, test: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        row = control_plane_row(folder)
        if test(row):
            return row
        assert time.monotonic() < deadline, f"{what}: {row}"
        time.sleep(0.25)


def test_an_impostor_on_the_control_planes_port_gets_no_token_and_a_restart_fails_no_request(
    hello: Path,  # noqa: F811 - the fixture
) -> None:
    # A port of its own: while this control plane is down, another mesh on the host (a second
    # test run) would otherwise be given the free default 15010 and take it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    # Every proxy writes its access log into its log file: a failure names the hop that failed.
    (hello / "access-log.yaml").write_text(ACCESS_LOG)
    result = gossamer(
        "up", ".", "--detach", "--control-plane-port", str(port),
        "--instance-ttl", f"{INSTANCE_TTL_S:g}s", cwd=hello,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    state = hello / ".gossamer"
    up = json.loads((state / "up.json").read_text())
    assert up["server"] == f"https://127.0.0.1:{port}"
    secrets = [(state / "control-plane" / "admin-token").read_text().strip()]
    secrets += [path.read_text().strip() for path in (state / "tokens").iterdir()]
    assert len(secrets) >= 4  # the admin, the gateway, the VIP proxy and each workload

    load = Load(up["gateway"])
    load.start()
    impostor = Impostor(port)
    try:
        # Let every proxy run the last pushed config (every endpoint ready: the apps started
        # with their sidecars) and the lease be written, then kill the control plane.
        def synced() -> bool:
            listed = gossamer("proxy-status", "-o", "json", cwd=hello)
            proxies = json.loads(listed.stdout) if listed.returncode == 0 else []
            return len(proxies) >= 6 and all(p["state"] == "SYNCED" for p in proxies)

        deadline = time.monotonic() + 30
        while not synced():
            assert time.monotonic() < deadline, "the proxies did not all sync"
            time.sleep(0.25)
        time.sleep(2)
        os.kill(_pid_of(state, "control-plane"), signal.SIGKILL)
        killed_at = time.monotonic()
        impostor.bind(timeout=5)

        # The supervisor starts the control plane again; it cannot listen, and is not ready
        # although something answers on its port: status names who holds it.
        held = wait_for(
            hello,
            "the restarted control plane reports its port taken",
            lambda row: f"port {port} is held by PID {os.getpid()}" in row["reason"],
            timeout=40,
        )
        assert not held["ready"], held

        # The CLI refuses the impostor by name, and sends it nothing.
        refused = gossamer("get", "virtualservices", cwd=hello)
        assert refused.returncode == 1
        assert "refusing the control plane" in refused.stderr, refused.stderr
        assert "No token was sent" in refused.stderr, refused.stderr

        # Down for longer than the TTL of an instance whose proxy is gone.
        time.sleep(max(0.0, killed_at + INSTANCE_TTL_S + 5 - time.monotonic()))
    finally:
        impostor.close()

    assert impostor.connections > 0, "no client tried the control plane while it was down"
    for secret in secrets:
        assert secret.encode() not in impostor.received
    gateway_log = (state / "logs" / "gateway.log").read_text()
    assert "control plane unverified" in gateway_log

    wait_for(hello, "the control plane back", lambda row: row["ready"], timeout=90)
    back_at = time.monotonic()
    assert gossamer("get", "virtualservices", cwd=hello).returncode == 0
    # Every proxy reconnects, the registry keeps their endpoints: traffic goes on unharmed, past
    # the restart's grace and the collection that follows it (every third of the TTL).
    time.sleep(max(0.0, back_at + RESTART_GRACE_S + INSTANCE_TTL_S / 3 + 2 - time.monotonic()))
    load.stop()
    assert load.failures == [], load.failures[:5]
    assert load.ok > 100
    listed = gossamer("proxy-status", "-o", "json", cwd=hello)
    assert listed.returncode == 0, listed.stderr
    proxies = json.loads(listed.stdout)
    sidecars = [p for p in proxies if p["role"] == "sidecar"]
    assert sidecars and all(p["certificateExpiry"] for p in sidecars), sidecars
    assert gossamer("down", cwd=hello).returncode == 0
