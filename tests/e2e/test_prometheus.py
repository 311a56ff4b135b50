"""A real Prometheus (Debian's) on the mesh of examples/hello, configured by `gossamer
prometheus-config`: it finds every proxy through the control plane's HTTP service discovery,
scrapes each, sees Istio's series, and every query of the Grafana dashboards answers with data.

One mesh and one Prometheus serve every test of the module; traffic runs through the gateway
all along, so that rates over the last minute are never zero. Grafana itself is not run: the
dashboards are checked for their structure (tests/unit/test_dashboards.py) and, here, for
their queries.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from .test_up_hello import EXAMPLE, alive, gossamer

T = TypeVar("T")

SCRAPE = "1s"
PROXY_KINDS = {"sidecar", "gateway", "vip-proxy"}
VARIABLES = {
    # The service and workload whose panels must show data: the frontend receives from the
    # gateway and calls the greeter, so inbound and outbound panels all have traffic.
    "$service": "greeter",
    "$namespace": "default",
    "$workload": "frontend",
    "$__rate_interval": "1m",
}


def prometheus_binary() -> str:
    """Debian's prometheus, installed on first use (as root) as tests install dig."""
    found = shutil.which("prometheus")
    if found is None:
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "prometheus"],
            check=True,
            env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        found = shutil.which("prometheus")
    assert found is not None, "prometheus (Debian's package) is needed"
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def poll(check: Callable[[], T | None], what: str, timeout: float = 45.0) -> T:
    """`check()`'s first answer that is not None, polled until a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.2)


@dataclass
class Traffic:
    """Requests through the gateway, a few a second, until stopped."""

    gateway: str
    stop: threading.Event
    statuses: list[int]

    def run(self) -> None:
        with httpx.Client(base_url=self.gateway, timeout=10.0) as client:
            while not self.stop.is_set():
                try:
                    self.statuses.append(client.get("/", params={"name": "Ada"}).status_code)
                except httpx.HTTPError:
                    self.statuses.append(0)
                self.stop.wait(0.05)


@dataclass(frozen=True)
class Observed:
    """The mesh, its Prometheus, and what `prometheus-config` wrote."""

    mesh: Path
    api: httpx.Client
    config: Path
    dashboards: Path
    traffic: Traffic

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result; a query Prometheus cannot parse fails the test."""
        answer = self.api.get("/api/v1/query", params={"query": expr})
        assert answer.status_code == 200, f"{expr}: {answer.text}"
        body = answer.json()
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


def _start_prometheus(binary: str, config: Path, storage: Path, log: Path) -> tuple[Any, str]:
    """A Prometheus on a free port (it takes no port 0): a port taken meanwhile is tried again."""
    for _ in range(3):
        port = free_port()
        with log.open("ab") as output:  # the child keeps its own copy
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={storage}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"

        def ready(process: subprocess.Popen[bytes] = process, url: str = url) -> bool | None:
            if process.poll() is not None:
                return False
            try:
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200 or None
            except httpx.HTTPError:
                return None

        if poll(ready, "prometheus ready", timeout=30):
            return process, url
    raise AssertionError(f"prometheus did not start: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    binary = prometheus_binary()
    root = tmp_path_factory.mktemp("prometheus")
    mesh = root / "hello"
    shutil.copytree(EXAMPLE, mesh, ignore=shutil.ignore_patterns(".gossamer", "__pycache__"))
    started = gossamer("up", ".", "--detach", cwd=mesh)
    assert started.returncode == 0, started.stdout + started.stderr
    process = None
    traffic = Traffic(
        json.loads((mesh / ".gossamer" / "up.json").read_text())["gateway"], threading.Event(), []
    )
    worker = threading.Thread(target=traffic.run, daemon=True)
    try:
        config, dashboards = root / "prometheus.yml", root / "dashboards"
        written = gossamer(
            "prometheus-config",
            "-o",
            str(config),
            "--scrape-interval",
            SCRAPE,
            "--refresh-interval",
            SCRAPE,
            "--dashboards",
            str(dashboards),
            cwd=mesh,
        )
        assert written.returncode == 0, written.stderr
        checked = subprocess.run(
            ["promtool", "check", "config", str(config)],
            check=False,
            capture_output=True,
            text=True,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        worker.start()
        process, url = _start_prometheus(binary, config, root / "tsdb", root / "prometheus.log")
        with httpx.Client(base_url=url, timeout=10.0) as api:
            yield Observed(mesh, api, config, dashboards, traffic)
    finally:
        traffic.stop.set()
        if worker.is_alive():
            worker.join(15)
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        pid = json.loads((mesh / ".gossamer" / "up.json").read_text())["pid"]
        stopped = gossamer("down", cwd=mesh)
        if stopped.returncode != 0 and alive(pid):
            subprocess.run(["kill", "-9", str(pid)], check=False)


def proxy_processes(mesh: Path) -> dict[str, str]:
    """Each proxy `up` runs, by process name, with its kind."""
    rows = json.loads((mesh / ".gossamer" / "status.json").read_text())["processes"]
    return {row["name"]: row["kind"] for row in rows if row["kind"] in PROXY_KINDS}


def test_prometheus_finds_every_proxy_through_the_control_plane_and_each_is_up(
    observed: Observed,
) -> None:
    expected = proxy_processes(observed.mesh)
    assert sorted(expected.values()) == ["gateway", *["sidecar"] * 4, "vip-proxy"]

    def all_up() -> list[dict[str, Any]] | None:
        answer = observed.api.get("/api/v1/targets", params={"state": "active"}).json()
        targets = [
            t for t in answer["data"]["activeTargets"] if t["scrapePool"] == "gossamer-proxies"
        ]
        if len(targets) == len(expected) and all(t["health"] == "up" for t in targets):
            return targets
        return None

    targets = poll(all_up, f"{len(expected)} proxy targets, all up")
    by_workload: dict[str, list[dict[str, str]]] = {}
    for target in targets:
        by_workload.setdefault(target["labels"]["workload"], []).append(target["labels"])
    assert sorted((w, len(t)) for w, t in by_workload.items()) == [
        ("frontend", 1),
        ("gossamer-vip-proxy", 1),
        ("greeter-v1", 2),
        ("greeter-v2", 1),
        ("istio-ingressgateway", 1),
    ]
    [gateway] = by_workload["istio-ingressgateway"]
    assert gateway["kind"] == "gateway" and gateway["namespace"] == "istio-system"
    assert gateway["node_id"].startswith("router~127.0.0.1~istio-ingressgateway.istio-system~")
    greeter = by_workload["greeter-v1"][0]
    assert (greeter["app"], greeter["version"], greeter["kind"]) == ("greeter", "v1", "sidecar")
    assert greeter["namespace"] == "default" and greeter["job"] == "gossamer-proxies"
    # Discovery labels are not kept beyond the ones the configuration names.
    assert not [name for name in greeter if name.startswith("__meta")]


def test_istio_requests_total_has_the_series_of_the_traffic_with_istios_labels(
    observed: Observed,
) -> None:
    # Each hop is reported twice: by the caller's proxy (source) and the callee's (destination).
    wanted = {
        ("source", "istio-system", "frontend", "frontend"),
        ("destination", "istio-system", "frontend", "frontend"),
        ("source", "default", "greeter", "greeter-v1"),
        ("destination", "default", "greeter", "greeter-v1"),
    }

    def series() -> list[dict[str, str]] | None:
        found = [
            item["metric"] for item in observed.query('istio_requests_total{response_code="200"}')
        ]
        hops = {
            (
                m["reporter"],
                m["source_workload_namespace"],
                m["destination_service_name"],
                m["destination_workload"],
            )
            for m in found
        }
        return found if wanted <= hops else None

    found = poll(series, f"the hops gateway -> frontend -> greeter: {sorted(wanted)}")
    to_greeter = [m for m in found if m["destination_service_name"] == "greeter"]
    for metric in to_greeter:
        assert metric["destination_service_namespace"] == "default"
        assert metric["destination_app"] == "greeter"
        assert metric["destination_version"] in ("v1", "v2")
        assert metric["source_principal"] == "spiffe://cluster.local/ns/default/sa/frontend"
        assert metric["connection_security_policy"] == "mutual_tls"
        # The scraped proxy's target labels sit beside Istio's own and renamed none of them.
        assert metric["job"] == "gossamer-proxies" and metric["kind"] == "sidecar"
        assert not [name for name in metric if name.startswith("exported_")], metric
        # Both ends name the caller's workload (the callee's from the caller's peer metadata)
        # and the service by its full name, as Istio's dashboards select it.
        assert metric["source_workload"] == "frontend"
        assert metric["destination_service"] == "greeter.default.svc.cluster.local"
        if metric["reporter"] == "source":
            assert metric["workload"] == "frontend"
        else:
            assert metric["workload"] == metric["destination_workload"]
    for name in (
        "istio_request_duration_milliseconds_bucket",
        "istio_request_bytes_bucket",
        "istio_response_bytes_bucket",
    ):
        assert observed.query(f'{name}{{destination_service_name="greeter"}}'), name
    assert [s for s in observed.traffic.statuses if s != 200] == []


def dashboard_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expression) of every query of a dashboard, rows' panels included."""
    found = []
    for panel in board["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            found += [(inner["title"], target["expr"]) for target in inner.get("targets", [])]
    return found


def concrete(expr: str) -> str:
    for variable, value in sorted(VARIABLES.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a template variable the test does not know: {expr}"
    return expr


def test_every_dashboard_query_parses_and_has_data_for_a_service_with_traffic(
    observed: Observed,
) -> None:
    boards = sorted(observed.dashboards.glob("*.json"))
    assert [b.name for b in boards] == [
        "gossamer-mesh.json",
        "gossamer-service.json",
        "gossamer-workload.json",
    ]
    # Let the traffic be scraped a few times first: rates need two samples in their window.
    poll(
        lambda: (
            observed.query(
                'sum(rate(istio_requests_total{destination_service_name="greeter"}[1m])) > 0'
            )
            or None
        ),
        "a rate of the greeter's requests",
    )
    for path in boards:
        board = json.loads(path.read_text())
        for variable in board["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"])
            assert match is not None, variable
            selector, label = concrete(match[1]), match[2]
            values = observed.api.get(f"/api/v1/label/{label}/values", params={"match[]": selector})
            assert values.status_code == 200, values.text
            assert VARIABLES[f"${variable['name']}"] in values.json()["data"], (path.name, variable)
        for title, expr in dashboard_queries(board):
            query = concrete(expr)

            def answered(query: str = query) -> list[dict[str, Any]] | None:
                return observed.query(query) or None

            result = poll(answered, f"{path.name} '{title}': {query}", timeout=30)
            assert result, (title, query)
