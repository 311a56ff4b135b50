"""A real etcd (Debian's etcd-server) on free ports with a temporary data folder, for store tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

ETCD_PACKAGE = "etcd-server"


def etcd_binary() -> str:
    """The etcd executable; installed from Debian when missing and running as root."""
    found = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    if found:
        return found
    if os.geteuid() != 0:
        pytest.fail(
            f"etcd is not installed and these tests are not root: run "
            f"`sudo apt-get install -y {ETCD_PACKAGE}` and try again"
        )
    subprocess.run(
        ["apt-get", "install", "-y", ETCD_PACKAGE], check=True, timeout=600, capture_output=True
    )
    installed = shutil.which("etcd")
    if installed is None:
        pytest.fail(f"apt-get install {ETCD_PACKAGE} did not provide an etcd binary")
    return installed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EtcdServer:
    """One etcd member; `start` waits (with a deadline) until it answers /health."""

    def __init__(self, binary: str, data_dir: Path) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self.log = data_dir.with_suffix(".log")

    def start(self, timeout: float = 30.0, attempts: int = 3) -> str:
        """Start on fresh free ports; a port taken between probe and bind means another try."""
        for _ in range(attempts):
            client, peer = _free_port(), _free_port()
            self._spawn(client, peer)
            if self._wait_healthy(f"http://127.0.0.1:{client}", timeout):
                self.url = f"http://127.0.0.1:{client}"
                return self.url
            self.stop()
        raise AssertionError(f"etcd did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self._process is None:
            return
        process, self._process = self._process, None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)

    def _spawn(self, client: int, peer: int) -> None:
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        command = [
            self.binary,
            "--name=test",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=test={peer_url}",
            "--log-level=warn",
        ]
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=log)

    def _wait_healthy(self, url: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                return False
            try:
                if httpx.get(f"{url}/health", timeout=1.0).json().get("health") == "true":
                    return True
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.05)
        return False
