"""What an app is told, and Kubernetes' `$(VAR)` references in its command."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from gossamer.events.client import environment_proxy
from gossamer.resources.kinds.apps import Deployment
from gossamer.resources.loader import load_text
from gossamer.runtime.environment import app_environment, expand_references
from gossamer.runtime.plan import PlanError, Replica, replica_of


def _replica(**labels: str) -> Replica:
    return Replica(
        deployment="asset-mgr-ms-v2",
        namespace="greencompute",
        index=0,
        argv=("python", "-m", "app"),
        env={"MODE": "fast"},
        service_account="asset-mgr-ms",
        labels=labels,
        app_port=4100,
        outbound_port=4101,
        inbound_port=4102,
        admin_port=4103,
        readiness=None,
    )


def test_references_expand_from_the_environment_and_unknown_ones_stay() -> None:
    env = {"PORT": "4100", "GOSSAMER_DATA": "/state/data"}
    argv = ["serve", "--listen", "127.0.0.1:$(PORT)", "--data=$(GOSSAMER_DATA)/log", "$(NOPE)"]
    assert expand_references(argv, env) == (
        "serve",
        "--listen",
        "127.0.0.1:4100",
        "--data=/state/data/log",
        "$(NOPE)",
    )


def test_a_doubled_dollar_escapes_a_reference() -> None:
    assert expand_references(["$$(PORT)", "cost: $$5", "$PORT"], {"PORT": "1"}) == (
        "$(PORT)",
        "cost: $5",
        "$PORT",
    )


def test_every_version_of_a_service_shares_its_data_folder(tmp_path: Path) -> None:
    env = app_environment(_replica(app="asset-mgr-ms", version="v2"), tmp_path, tmp_path / "d")
    assert env["GOSSAMER_DATA"] == str(tmp_path / "d" / "greencompute" / "asset-mgr-ms")
    assert env["GOSSAMER_SERVICE"] == "asset-mgr-ms"
    assert env["GOSSAMER_REPLICA"] == "greencompute.asset-mgr-ms-v2-0"
    assert env["PORT"] == "4100" and env["MODE"] == "fast"
    alone = app_environment(_replica(), tmp_path, tmp_path / "d")
    assert alone["GOSSAMER_DATA"].endswith("greencompute/asset-mgr-ms-v2")


def test_the_event_client_takes_the_sidecar_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:4101")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    assert environment_proxy("http://event-broker-svc:8080") == "http://127.0.0.1:4101"
    assert environment_proxy("http://127.0.0.1:15070") is None
    monkeypatch.delenv("http_proxy")
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    assert environment_proxy("http://event-broker-svc:8080") is None


def _deployment(annotations: str) -> Deployment:
    text = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata:
      labels: {{app: web}}
{annotations}
    spec:
      containers: [{{name: web, command: [python, -m, web]}}]
"""
    loaded = load_text(text, "web.yaml")
    [loaded_deployment] = loaded.resources
    deployment = loaded_deployment.resource
    assert isinstance(deployment, Deployment)
    return deployment


def test_an_app_starts_with_its_sidecar_unless_its_pod_asks_to_be_held() -> None:
    ports = iter(range(20000, 20100))
    assert not replica_of(_deployment(""), 0, lambda _: next(ports)).hold_until_proxy_starts
    held = _deployment(
        "      annotations:\n"
        "        proxy.istio.io/config: '{\"holdApplicationUntilProxyStarts\": true}'"
    )
    assert replica_of(held, 0, lambda _: next(ports)).hold_until_proxy_starts
    broken = _deployment(
        "      annotations:\n        proxy.istio.io/config: 'holdApplicationUntilProxyStarts: 1'"
    )
    with pytest.raises(PlanError, match="holdApplicationUntilProxyStarts must be true or false"):
        replica_of(broken, 0, lambda _: next(ports))


def test_python_apps_get_the_trace_hook_first_unless_switched_off(tmp_path: Path) -> None:
    env = app_environment(_replica(), tmp_path, tmp_path / "d")
    hook, workdir = env["PYTHONPATH"].split(os.pathsep)[:2]
    assert (Path(hook) / "sitecustomize.py").is_file()
    assert workdir == str(tmp_path)
    replica = _replica()
    off = dataclasses.replace(replica, env={**replica.env, "GOSSAMER_TRACE_PROPAGATION": "off"})
    env = app_environment(off, tmp_path, tmp_path / "d")
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path)
    assert env["GOSSAMER_TRACE_PROPAGATION"] == "off"


def test_env_values_expand_the_variables_defined_before_them() -> None:
    text = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          command: [python, -m, web]
          env:
            - {name: HOST, value: db.internal}
            - {name: URL, value: "postgres://$(HOST):5432/$(DB)"}
            - {name: DB, value: assets}
            - {name: PRICE, value: "$$(HOST) costs $$5"}
"""
    [loaded] = load_text(text, "web.yaml").resources
    assert isinstance(loaded.resource, Deployment)
    ports = iter(range(20000, 20100))
    env = replica_of(loaded.resource, 0, lambda _: next(ports)).env
    # As Kubernetes: DB is defined after URL, so its reference stays as written.
    assert env["URL"] == "postgres://db.internal:5432/$(DB)"
    assert env["PRICE"] == "$(HOST) costs $5"
