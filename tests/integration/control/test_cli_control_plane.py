"""`gossamer control-plane` as a process: it starts, answers with its token, and stops on SIGTERM."""

from __future__ import annotations

import base64
import json
import os
import selectors
import signal
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .etcd import EtcdServer

SERVICES = "/api/v1/namespaces/default/services"
SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web"},
    "spec": {"ports": [{"port": 80}]},
}


def roots(state: Path) -> ssl.SSLContext:
    """What a client verifies the control plane with: the mesh's trust bundle."""
    return ssl.create_default_context(cafile=str(state / "ca" / "trust-bundle.pem"))


class ControlPlaneProcess:
    """The command in a child process; `start` waits (with a deadline) for its ready line."""

    def __init__(self, state: Path, *args: str) -> None:
        self.state = state
        self.args = args
        self.url = ""
        self.ready_line = ""
        self.process: subprocess.Popen[str] | None = None
        self.log = state.parent / "control-plane.log"

    def start(self, timeout: float = 30.0) -> str:
        command = [sys.executable, "-m", "gossamer", "control-plane", "--listen", "127.0.0.1:0"]
        command += ["--state", str(self.state), *self.args]
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, text=True, env=dict(os.environ)
            )
        self.ready_line = _read_line(self.process, timeout)
        if "listening on " not in self.ready_line:
            self.kill()
            raise AssertionError(f"no ready line: {self.ready_line!r}\n{self.log.read_text()}")
        self.url = self.ready_line.split("listening on ")[1].split()[0]
        return self.url

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._close()
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._close()

    def _close(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
        return process.stdout.readline()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[ControlPlaneProcess]]:
    started: list[ControlPlaneProcess] = []
    yield started
    for process in started:
        process.kill()


def _start(started: list[ControlPlaneProcess], state: Path, *args: str) -> ControlPlaneProcess:
    process = ControlPlaneProcess(state, *args)
    started.append(process)
    process.start()
    return process


def test_the_command_serves_with_a_private_admin_token_and_stops_on_sigterm(
    tmp_path: Path, processes: list[ControlPlaneProcess]
) -> None:
    state = tmp_path / "state"
    plane = _start(processes, state)
    token_file = state / "admin-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert f"store sqlite:{state}/store.db" in plane.ready_line
    token = token_file.read_text().strip()
    assert plane.url.startswith("https://")
    with httpx.Client(base_url=plane.url, timeout=10.0, verify=roots(state)) as http:
        assert http.get(SERVICES).status_code == 401
        headers = {"Authorization": f"Bearer {token}"}
        created = http.post(SERVICES, json=SERVICE, headers=headers)
        assert created.status_code == 201, created.text
        assert http.get(f"{SERVICES}/web", headers=headers).json() == created.json()
    assert plane.terminate() == 0

    # A restart keeps the token and the objects.
    again = _start(processes, state)
    with httpx.Client(base_url=again.url, timeout=10.0, verify=roots(state)) as http:
        headers = {"Authorization": f"Bearer {token}"}
        assert http.get(f"{SERVICES}/web", headers=headers).json() == created.json()
    assert again.terminate() == 0


def test_the_command_runs_on_etcd(
    tmp_path: Path, processes: list[ControlPlaneProcess], etcd_server: EtcdServer
) -> None:
    store = etcd_server.url.replace("http://", "etcd://") + "/cli-test"
    plane = _start(processes, tmp_path / "state", "--store", store)
    assert f"store {store}" in plane.ready_line
    token = (tmp_path / "state" / "admin-token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    verify = roots(tmp_path / "state")
    with httpx.Client(base_url=plane.url, headers=headers, timeout=10.0, verify=verify) as http:
        created = http.post(SERVICES, json=SERVICE)
        assert created.status_code == 201, created.text
        listed = http.get(SERVICES).json()
    assert [i["metadata"]["name"] for i in listed["items"]] == ["web"]
    # The object is in etcd under the prefix given in the URL.
    key = base64.b64encode(b"/cli-test/core/services/default/web").decode()
    ranged = httpx.post(f"{etcd_server.url}/v3/kv/range", json={"key": key}).json()
    assert ranged["count"] == "1"
    assert plane.terminate() == 0


def test_a_store_that_is_not_there_fails_with_a_message(tmp_path: Path) -> None:
    command = ["control-plane", "--state", str(tmp_path), "--store", "etcd://127.0.0.1:1"]
    result = subprocess.run(
        [sys.executable, "-m", "gossamer", *command, "--listen", "127.0.0.1:0"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "error: etcd at http://127.0.0.1:1" in result.stderr


def test_a_bad_store_option_is_a_usage_error(tmp_path: Path) -> None:
    command = ["control-plane", "--store", "mysql://x", "--state", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", "gossamer", *command],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "expected sqlite:FILE or etcd://HOST:PORT" in result.stderr


def test_the_command_line_does_not_load_the_control_plane_until_asked() -> None:
    probe = (
        "import json, sys; import gossamer.cli.app; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('gossamer.control'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout) == []
