"""A real control plane on a free port, served from a thread, and the `gossamer` CLI run against it.

The plane runs in its own thread and event loop so that a test can block on a CLI subprocess
while the plane answers it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

import yaml

from gossamer.control.client import ApiClient, StatusError
from gossamer.control.server import ControlPlane, ControlPlaneConfig
from gossamer.listen import Listen

GOSSAMER = Path(sys.executable).parent / "gossamer"
_DISCOVERY_ENV = ("GOSSAMER_SERVER", "GOSSAMER_TOKEN")


class PlaneThread:
    """`start()` returns once the plane accepts requests; `stop()` shuts it down in order."""

    def __init__(self, state_dir: Path) -> None:
        self.config = ControlPlaneConfig(
            # Plain HTTP: what the commands print; test_cli_trust.py runs them over TLS.
            state_dir=state_dir,
            listen=Listen("127.0.0.1", 0),
            graceful_s=1.0,
            tls=False,
        )
        self.url = ""
        self.token = ""
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="control-plane", daemon=True)

    @property
    def token_file(self) -> Path:
        return self.config.state_dir / "admin-token"

    def client(self) -> ApiClient:
        return ApiClient(self.url, self.token)

    def seed(self, manifests: str) -> None:
        """Write the objects of some manifests through the API, as an earlier apply would."""
        with self.client() as api:
            for body in yaml.safe_load_all(manifests):
                served = api.served(body["apiVersion"], body["kind"])
                assert served is not None
                namespace = body["metadata"].get("namespace", "default")
                try:
                    api.create(served, namespace, body)
                except StatusError as error:
                    assert error.code == 409, error.message
                    api.replace(served, namespace, body["metadata"]["name"], body)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise AssertionError(f"the control plane did not start in {timeout}s")
        if self._failure is not None:
            raise self._failure

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the control plane did not stop"

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with ControlPlane(self.config) as plane:
                self.url = plane.url
                self.token = plane.token_file.read_text().strip()
                self._ready.set()
                await self._stop.wait()
        except BaseException as error:
            self._failure = error
            self._ready.set()


def gossamer(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real command as a user would; `env` replaces the discovery variables."""
    environment = {k: v for k, v in os.environ.items() if k not in _DISCOVERY_ENV}
    environment.update(env or {})
    result = subprocess.run(
        [str(GOSSAMER), *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return result
