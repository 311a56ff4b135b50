"""The wheel a user installs runs the proxy's hot path compiled: `gossamer proxy` from a new venv
says so in /config_dump and forwards a request, and the proxy's tests pass against the installed
package.

The wheel is built as `make wheel` builds it, from a copy of the tree (the tree's own build/ and
egg-info stay as they are), and takes the extensions `make native` compiled there when they are
current, as the build does for any tree: compiling again would cost CI a minute. The new venv
takes the package from the wheel and its dependencies from this test's environment (a .pth
line), so nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gossamer.proxy import compile as hotpath_build
from gossamer.proxy import native
from gossamer.snapshot import (
    Cluster,
    Endpoint,
    Listener,
    Route,
    RouteTable,
    Snapshot,
    VirtualHost,
    WeightedCluster,
    dump,
)

ROOT = Path(__file__).resolve().parents[2]
# The proxy's sans-IO units, and its data path over real sockets.
PROXY_TESTS = [
    "tests/unit/proxy",
    "tests/component/proxy/test_forwarding.py",
    "tests/component/proxy/test_pipelining.py",
    "tests/component/proxy/test_strict_parsing.py",
]
# The installed package must be the one imported, compiled, before pytest runs its tests.
RUN_TESTS = """
import sys
import gossamer.proxy.native as native
assert native.__file__.startswith(sys.prefix), native.__file__
assert native.MODE == "compiled", native.describe()
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


def run(*command: str | Path, timeout: float = 120.0, cwd: Path | None = None, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != native.PURE_ENV} | env
    done = subprocess.run(
        [str(part) for part in command],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=environment,
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def build_wheel(tree: Path, wheels: Path, **env: str) -> Path:
    """`make wheel`'s command; compiling afresh (when the tree's extensions are stale) takes a
    minute, more on a busy machine."""
    pip = [sys.executable, "-m", "pip", "--quiet", "wheel", "--no-deps", "--no-build-isolation"]
    run(*pip, "--wheel-dir", wheels, tree, timeout=280.0, **env)
    [wheel] = wheels.iterdir()
    return wheel


def platform_tag() -> str:
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    return f"{tag}-{tag}-{sysconfig.get_platform().replace('-', '_').replace('.', '_')}"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the sdist holds, and the extensions compiled in place."""
    tree = tmp_path_factory.mktemp("tree")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".*.partial")
    shutil.copytree(ROOT / "src", tree / "src", ignore=ignore)
    return tree


@pytest.fixture(scope="module")
def venv(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with the wheel built from this tree installed."""
    problem = hotpath_build.compiler_problem()
    assert problem is None, f"cannot compile the hot path: {problem}"
    work = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(tree, work / "dist")
    assert wheel.name.endswith(f"-{platform_tag()}.whl"), wheel.name

    venv = work / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    paths = {"base": str(venv), "platbase": str(venv)}
    site = Path(sysconfig.get_path("purelib", vars=paths))
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    pip = [sys.executable, "-m", "pip", "--quiet", "--python", venv / "bin" / "python"]
    run(*pip, "install", "--no-deps", "--no-index", wheel)
    return venv


@pytest.fixture
def backend() -> Iterator[int]:
    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello from the backend\n"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def bootstrap(port: int) -> Snapshot:
    return Snapshot(
        version="1",
        listeners=(
            Listener(
                name="outbound", address="127.0.0.1", port=0, role="outbound", route_table="out"
            ),
        ),
        route_tables=(
            RouteTable(
                name="out",
                virtual_hosts=(
                    VirtualHost(
                        name="all",
                        domains=("*",),
                        routes=(Route(name="hello", clusters=(WeightedCluster(cluster="hello"),)),),
                    ),
                ),
            ),
        ),
        clusters=(Cluster(name="hello", endpoints=(Endpoint(address="127.0.0.1", port=port),)),),
    )


def ready_ports(process: subprocess.Popen[bytes], ready: Path, log: Path) -> dict[str, int]:
    deadline = time.monotonic() + 30.0
    while not (ready.exists() and "admin" in ready.read_text()):
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"not ready in 30 s:\n{log.read_text()}"
        time.sleep(0.05)
    lines = ready.read_text().splitlines()
    return {name: int(port) for name, port in (line.split() for line in lines)}


def test_gossamer_proxy_from_the_wheel_runs_the_hot_path_compiled(
    venv: Path, backend: int, tmp_path: Path
) -> None:
    config = tmp_path / "bootstrap.json"
    config.write_bytes(dump(bootstrap(backend)))
    ready, log = tmp_path / "ready", tmp_path / "proxy.log"
    env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    command = [venv / "bin" / "gossamer", "proxy", "--bootstrap", config]
    command += ["--admin", "127.0.0.1:0", "--ready-file", ready]
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=output, env=env)
    try:
        ports = ready_ports(process, ready, log)
        # Straight to the ports, whatever proxy the environment names.
        client = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with client.open(f"http://127.0.0.1:{ports['admin']}/config_dump", timeout=10) as answer:
            assert json.load(answer)["hot_path"] == "compiled"
        with client.open(f"http://127.0.0.1:{ports['outbound']}/", timeout=10) as answer:
            assert answer.read() == b"hello from the backend\n"
        # The extensions mapped are the wheel's, not the tree's.
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        mapped = {line.split()[-1] for line in maps.splitlines() if "hotpath__mypyc" in line}
        assert mapped, "no compiled hot path is mapped"
        assert all(path.startswith(str(venv)) for path in mapped), mapped
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15.0) == 0, log.read_text()


def test_the_proxy_tests_pass_against_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    pytest_args = ["-q", "-p", "no:cacheprovider", "--basetemp", tmp_path / "tests"]
    output = run(venv / "bin" / "python", "-c", RUN_TESTS, *pytest_args, *PROXY_TESTS, cwd=ROOT)
    assert " passed" in output.splitlines()[-1], output


def test_without_a_c_compiler_the_wheel_is_pure_python(tree: Path, tmp_path: Path) -> None:
    wheel = build_wheel(tree, tmp_path, CC="no-such-compiler")
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    with zipfile.ZipFile(wheel) as contents:
        proxy = {Path(name).name for name in contents.namelist() if "/proxy/" in name}
    assert {f"{name}.py" for name in native.MODULES} <= proxy
    built = {name for name in proxy if name.endswith((".so", ".pyd", native.DIGEST_FILE))}
    assert built == set()
