"""`gossamer up` of a folder routed with the Kubernetes Gateway API: a Gateway and HTTPRoute at
the ingress gateway (a path match, a header filter, a 50/50 split between two versions), and an
HTTPRoute on a Service that sends a sidecar's calls to one version."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.test_up_hello import gossamer
from tests.e2e.test_up_kubernetes import _mesh

HOST = {"host": "shop.example.com"}


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Path]:
    yield from _mesh(tmp_path, "gateway-api")


def _get(http: httpx.Client, path: str) -> Any:
    """GET through the gateway, polled until every replica behind it is ready."""
    deadline = time.monotonic() + 20
    while True:
        response = http.get(path, headers=HOST)
        if response.status_code == 200:
            return response.json()
        assert time.monotonic() < deadline, f"{response.status_code} {response.text}"
        time.sleep(0.2)


def test_gateway_api_routes_at_the_gateway_and_in_the_sidecars(mesh: Path) -> None:
    checked = gossamer("validate", "-f", ".", cwd=mesh)
    assert checked.returncode == 0 and "warning" not in checked.stdout, checked.stdout
    result = gossamer("up", ".", "--detach", cwd=mesh)
    assert result.returncode == 0, result.stdout + result.stderr
    up = json.loads((mesh / ".gossamer" / "up.json").read_text())
    with httpx.Client(base_url=up["gateway"], timeout=10.0) as http:
        first = _get(http, "/store/items")
        assert first["path"] == "/store/items"
        assert first["x-gateway"] == "gossamer"
        # Both versions answer before the split is counted: the other may still be starting.
        seen = {first["role"]}
        deadline = time.monotonic() + 20
        while seen != {"shop-v1", "shop-v2"}:
            assert time.monotonic() < deadline, seen
            seen.add(_get(http, "/store")["role"])
        # The 50/50 split, within a tolerance that 200 draws keep (p < 1e-5).
        versions = Counter(_get(http, "/store")["role"] for _ in range(200))
        assert 60 <= versions["shop-v1"] <= 140, versions
        # No rule matches: the route's host answers 404.
        assert http.get("/elsewhere", headers=HOST).status_code == 404
        # The client's sidecar routes its calls to the shop Service by the mesh HTTPRoute.
        called = [_get(http, "/call/shop")["called"] for _ in range(10)]
        assert {answer["role"] for answer in called} == {"shop-v2"}
        assert all(answer["x-gateway"] is None for answer in called)
    assert gossamer("down", cwd=mesh).returncode == 0
