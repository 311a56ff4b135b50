"""`gossamer up` of Kubernetes folders as people have them: bookinfo's shape with commands added,
a folder of the pod features apps rely on (ConfigMaps and Secrets as env and files, the
Downward API, a StatefulSet's per-replica DNS names, a Job run to completion), and a Deployment
that a HorizontalPodAutoscaler scales with its load."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.test_up_hello import alive, dig, gossamer

HERE = Path(__file__).resolve().parent / "kubernetes"


def _mesh(tmp_path: Path, name: str) -> Iterator[Path]:
    folder = tmp_path / name
    shutil.copytree(HERE / name, folder)
    shutil.copy(HERE / "podapp.py", folder)
    yield folder
    up_file = folder / ".gossamer" / "up.json"
    if up_file.exists():  # a failed test must not leave a mesh running
        pid = json.loads(up_file.read_text())["pid"]
        if gossamer("down", cwd=folder).returncode != 0 and alive(pid):
            subprocess.run(["kill", "-9", str(pid)], check=False)


@pytest.fixture
def bookinfo(tmp_path: Path) -> Iterator[Path]:
    yield from _mesh(tmp_path, "bookinfo")


@pytest.fixture
def features(tmp_path: Path) -> Iterator[Path]:
    yield from _mesh(tmp_path, "features")


@pytest.fixture
def autoscale(tmp_path: Path) -> Iterator[Path]:
    yield from _mesh(tmp_path, "autoscale")


def _up(folder: Path, *options: str) -> dict[str, Any]:
    result = gossamer("up", ".", "--detach", *options, cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    up: dict[str, Any] = json.loads((folder / ".gossamer" / "up.json").read_text())
    return up


def _resolve(up: dict[str, Any], name: str) -> str:
    """The name's one address, polled: the DNS follows the control plane once a second."""
    host, port = up["dns"].split(":")
    deadline = time.monotonic() + 15
    while True:
        answer = subprocess.run(
            [dig(), f"@{host}", "-p", port, "+short", name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if len(answer) == 1:
            return answer[0]
        assert time.monotonic() < deadline, (name, answer)
        time.sleep(0.2)


def _get(url: str) -> Any:
    """GET through a virtual IP, polled: a new endpoint takes its first snapshot's time."""
    deadline = time.monotonic() + 20
    while True:
        try:
            response = httpx.get(url, timeout=5.0)
            if response.status_code == 200:
                return response.json()
            last = f"{response.status_code} {response.text}"
        except httpx.HTTPError as error:
            last = repr(error)
        assert time.monotonic() < deadline, last
        time.sleep(0.2)


def test_bookinfo_runs_unchanged_but_for_its_commands(bookinfo: Path) -> None:
    checked = gossamer("validate", "-f", ".", cwd=bookinfo)
    assert checked.returncode == 0 and "warning" not in checked.stdout, checked.stdout
    up = _up(bookinfo)
    page = _get(f"http://{_resolve(up, 'productpage.default.svc.cluster.local')}:9080/")
    assert page["role"] == "productpage"
    details, reviews = page["calls"]
    assert details["role"] == "details"
    assert reviews["role"] in ("reviews-v1", "reviews-v2", "reviews-v3")
    if reviews["role"] != "reviews-v1":
        assert [call["role"] for call in reviews["calls"]] == ["ratings"]
    stored = gossamer("get", "serviceaccounts", cwd=bookinfo)
    assert "bookinfo-productpage" in stored.stdout, stored.stdout + stored.stderr
    assert gossamer("down", cwd=bookinfo).returncode == 0


def test_configmaps_secrets_downward_api_statefulset_names_and_a_job(features: Path) -> None:
    up = _up(features)
    shop = f"http://{_resolve(up, 'shop.default.svc.cluster.local')}"
    names = "CFG_GREETING/PASSWORD/MISSING_OK/POD_NAME/POD_NAMESPACE/POD_IP/TIER/HOSTNAME"
    assert _get(f"{shop}/env/{names}") == {
        "CFG_GREETING": "hello from a ConfigMap",
        "PASSWORD": "s3cr3t",
        "MISSING_OK": None,
        "POD_NAME": "shop-0",
        "POD_NAMESPACE": "default",
        "POD_IP": "127.0.0.1",
        "TIER": "front",
        "HOSTNAME": "shop-0",
    }
    assert _get(f"{shop}/file/GOSSAMER_MOUNT_ETC_SHOP/conf/app.properties") == "color=blue\n"
    assert _get(f"{shop}/file/GOSSAMER_MOUNT_VAR_RUN_SECRETS_SHOP/token") == "plain-token"
    assert _get(f"{shop}/file/GOSSAMER_MOUNT_VAR_RUN_SECRETS_SHOP/password") == "s3cr3t"

    # Each StatefulSet replica answers at its own name, and only that replica does.
    for pod in ("web-0", "web-1"):
        address = _resolve(up, f"{pod}.web.default.svc.cluster.local")
        assert address.startswith("127.")
        assert {_get(f"http://{address}/")["pod"] for _ in range(4)} == {pod}

    # The Job fails once, is retried per its restartPolicy, and completes; its sidecar stops.
    deadline = time.monotonic() + 30
    while True:
        status = json.loads(gossamer("status", "-o", "json", cwd=features).stdout)
        jobs = status.get("jobs") or []
        if jobs and jobs[0]["status"] == "Complete":
            break
        assert time.monotonic() < deadline, jobs
        time.sleep(0.3)
    assert jobs == [
        {
            "name": "migrate",
            "namespace": "default",
            "completions": 1,
            "succeeded": 1,
            "failed": 0,
            "active": 0,
            "status": "Complete",
        }
    ]
    rows = {row["name"]: row for row in status["processes"]}
    assert rows["migrate-0"]["restarts"] == 1 and rows["migrate-0"]["phase"] == "Stopped"
    deadline = time.monotonic() + 15
    while rows["migrate-0.sidecar"]["phase"] != "Stopped":
        assert time.monotonic() < deadline, rows["migrate-0.sidecar"]
        time.sleep(0.3)
        status = json.loads(gossamer("status", "-o", "json", cwd=features).stdout)
        rows = {row["name"]: row for row in status["processes"]}
    # As a kubelet reports them: the StatefulSet's pods run, the Job's completed.
    deadline = time.monotonic() + 10
    while True:
        listed = gossamer("get", "pods", cwd=features).stdout.splitlines()[1:]
        pods = {line.split()[0]: line.split()[1:4] for line in listed}
        if pods.get("migrate-0", [""])[1] == "Completed" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert pods["web-0"] == ["2/2", "Running", "0"] and pods["web-1"][:2] == ["2/2", "Running"]
    assert pods["migrate-0"][1:] == ["Completed", "1"], pods
    # A pod shows its containers as declared: env references, never a Secret's value.
    described = gossamer("describe", "pod", "shop-0", cwd=features)
    assert described.returncode == 0, described.stderr
    assert "shop-secret" in described.stdout and "istio-proxy" in described.stdout
    assert "s3cr3t" not in described.stdout
    assert gossamer("down", cwd=features).returncode == 0


def _replicas(folder: Path, service: str) -> tuple[int, int]:
    status = json.loads(gossamer("status", "-o", "json", cwd=folder).stdout)
    [row] = [row for row in status["services"] if row["name"] == service]
    return int(row["replicas"]), int(row["ready"])


def _pods(folder: Path) -> dict[str, tuple[str, str]]:
    """`get pods -l app=shop`: each pod's READY and STATUS, once they have settled."""
    deadline = time.monotonic() + 10
    while True:
        listed = gossamer("get", "pods", "-l", "app=shop", cwd=folder)
        rows = [line.split() for line in listed.stdout.splitlines()[1:]]
        found = {row[0]: (row[1], row[2]) for row in rows}
        if all(ready == "2/2" for ready, _ in found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def test_a_horizontal_pod_autoscaler_follows_the_requests_per_second(autoscale: Path) -> None:
    up = _up(autoscale, "--hpa-sync-period", "1s")
    shop = f"http://{_resolve(up, 'shop.default.svc.cluster.local')}/"
    _get(shop)
    assert _replicas(autoscale, "shop") == (1, 1)
    # Each replica is a Pod in the control plane, as a kubelet reports it.
    assert _pods(autoscale) == {"shop-0": ("2/2", "Running")}
    described = gossamer("describe", "pod", "shop-0", cwd=autoscale)
    assert described.returncode == 0, described.stderr
    assert "istio-proxy" in described.stdout and "app=shop" in described.stdout, described.stdout

    # About 40 requests a second against a target of 5 per replica: 3 replicas, the maximum.
    stop = threading.Event()
    failures: list[str] = []

    def load() -> None:
        with httpx.Client(timeout=5.0) as client:
            while not stop.is_set():
                response = client.get(shop)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:100]}")
                time.sleep(0.04)

    # Two clients: enough for three replicas' worth even when a busy machine slows each one.
    workers = [threading.Thread(target=load, daemon=True) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + 40
        while _replicas(autoscale, "shop") != (3, 3):
            assert time.monotonic() < deadline, _replicas(autoscale, "shop")
            time.sleep(0.5)
        listed = gossamer("get", "hpa", cwd=autoscale)
        assert listed.returncode == 0, listed.stderr
        header, line = listed.stdout.splitlines()
        starts = [m.start() for m in re.finditer(r"\S+", header)]
        row = {
            header[a:b].strip(): line[a:b].strip()
            for a, b in zip(starts, [*starts[1:], None], strict=True)
        }
        assert row["REFERENCE"] == "Deployment/shop", listed.stdout
        assert (row["MINPODS"], row["MAXPODS"], row["REPLICAS"]) == ("1", "3", "3"), listed.stdout
        # kubectl's `current/target` per metric: requests per second, then CPU utilization.
        rate, cpu = row["TARGETS"].split(", ")
        assert rate.endswith("/5") and cpu.endswith("%/500%"), listed.stdout
        assert _pods(autoscale) == {f"shop-{i}": ("2/2", "Running") for i in range(3)}
        stored = json.loads(gossamer("get", "hpa", "shop", "-o", "json", cwd=autoscale).stdout)
        assert stored["status"]["desiredReplicas"] == 3
        assert stored["status"]["conditions"][0]["reason"] == "ValidMetricFound"
        assert stored["status"]["lastScaleTime"]
        metrics = {m["type"]: m for m in stored["status"]["currentMetrics"]}
        assert set(metrics) == {"Pods", "Resource"}
        assert metrics["Resource"]["resource"]["name"] == "cpu"
    finally:
        stop.set()
        for worker in workers:
            worker.join(10)
    assert failures == [], failures[:3]

    # Idle again: back to one replica (no scale-down window in this autoscaler).
    deadline = time.monotonic() + 40
    while _replicas(autoscale, "shop") != (1, 1):
        assert time.monotonic() < deadline, _replicas(autoscale, "shop")
        time.sleep(0.5)
    deployment = json.loads(gossamer("get", "deploy", "shop", "-o", "json", cwd=autoscale).stdout)
    assert deployment["spec"]["replicas"] == 1
    deadline = time.monotonic() + 10
    while (pods := _pods(autoscale)) != {"shop-0": ("2/2", "Running")}:
        assert time.monotonic() < deadline, pods
        time.sleep(0.3)
    assert gossamer("down", cwd=autoscale).returncode == 0
