"""One `gossamer up` of examples/assets (without its simulator) shared by the tests of this
folder, and a client that uses it as a person would: through the gateway only.

What a person reads besides the gateway is what the application tells them to read: the
mailbox file the mailer writes, and the event history through the broker's SQL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "assets"
HOST = "assets.greencompute.local"
ADMIN_PASSWORD = "admin-demo-password"
T = TypeVar("T")


def gossamer(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gossamer", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def eventually(check: Callable[[], T | None], timeout: float = 30.0, what: str = "") -> T:
    """Poll `check` until it returns something other than None (or False)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None and found is not False:
            return found
        assert time.monotonic() < deadline, f"not within {timeout:.0f}s: {what}"
        time.sleep(0.1)


@dataclass
class Tokens:
    access: str
    refresh: str
    user_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.access}"}


class AssetsApp:
    """The running application, as its users reach it."""

    def __init__(self, folder: Path, up: dict[str, Any]) -> None:
        self.folder = folder
        self.state = folder / ".gossamer"
        self.gateway = up["gateway"]
        self.broker = up["events"]
        self.http = httpx.Client(base_url=self.gateway, headers={"host": HOST}, timeout=20.0)

    def close(self) -> None:
        self.http.close()

    @property
    def mailbox(self) -> Path:
        return self.state / "data" / "greencompute" / "mailer" / "mailbox.txt"

    def mail(self, to: str, purpose: str) -> dict[str, Any]:
        """The newest mail of `purpose` sent to `to`, once the mailer has written it."""

        def newest() -> dict[str, Any] | None:
            if not self.mailbox.exists():
                return None
            found = [json.loads(line) for line in self.mailbox.read_text().splitlines()]
            mine = [m for m in found if m["to"] == to and m.get("purpose") == purpose]
            return mine[-1] if mine else None

        return eventually(newest, what=f"a {purpose} mail to {to}")

    def login(self, username: str, password: str, timeout: float = 30.0) -> Tokens:
        """Log in; waits while the account's credentials travel to the auth service."""

        def attempt() -> Tokens | None:
            answer = self.http.post(
                "/auth/login", json={"username": username, "password": password}
            )
            if answer.status_code != 200:
                return None
            body = answer.json()
            return Tokens(body["accessToken"], body["refreshToken"], body["userId"])

        return eventually(attempt, timeout, f"{username} logs in")

    def admin(self) -> Tokens:
        return self.login("admin", ADMIN_PASSWORD)

    def new_user(
        self,
        *,
        roles: list[str] | None = None,
        permissions: list[str] | None = None,
        password: str = "a-long-password-1",
    ) -> tuple[str, str, Tokens]:
        """An active account made by the admin: (username, password, tokens)."""
        name = f"user-{uuid.uuid4().hex[:8]}"
        made = self.http.post(
            "/users",
            headers=self.admin().headers,
            json={
                "username": name,
                "email": f"{name}@example.com",
                "password": password,
                "roles": roles or ["user"],
                "permissions": permissions or ["assets:write"],
            },
        )
        assert made.status_code == 201, made.text
        return name, password, self.login(name, password)

    def device(self) -> Tokens:
        """A sensor gateway's account, which may post readings."""
        return self.new_user(roles=["device"], permissions=["readings:write"])[2]

    def add_asset(
        self, owner: Tokens, name: str, site: str = "rotterdam", kind: str = "pump"
    ) -> dict[str, Any]:
        answer = self.http.post(
            "/assetdashboard/api/assets",
            headers=owner.headers,
            json={"name": name, "type": kind, "site": site},
        )
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def query(self, sql: str) -> list[list[Any]]:
        """SQL over the topics' history, straight to the broker as `gossamer events query`."""
        answer = httpx.post(f"{self.broker}/query", json={"sql": sql}, timeout=60.0)
        assert answer.status_code == 200, answer.text
        return list(answer.json()["rows"])


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


ACCESS_LOG = """\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: envoy}]}]
"""


@pytest.fixture(scope="package")
def assets_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AssetsApp]:
    if shutil.which("node") is None:
        pytest.fail("node is needed (make test installs Debian's nodejs)")
    folder = tmp_path_factory.mktemp("assets") / "assets"
    shutil.copytree(
        EXAMPLE,
        folder,
        ignore=shutil.ignore_patterns(".gossamer", "__pycache__", ".data", "simulator.yaml"),
    )
    # Every proxy writes its access log into its log file: a failure names the hop that failed.
    (folder / "access-log.yaml").write_text(ACCESS_LOG)
    result = gossamer("up", ".", "--detach", cwd=folder, timeout=240)
    up_file = folder / ".gossamer" / "up.json"
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        app = AssetsApp(folder, json.loads(up_file.read_text()))
        try:
            yield app
        finally:
            app.close()
    finally:
        if up_file.exists():
            pid = json.loads(up_file.read_text())["pid"]
            if gossamer("down", cwd=folder).returncode != 0 and _alive(pid):
                os.kill(pid, signal.SIGKILL)
