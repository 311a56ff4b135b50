"""Manifests and URLs the API tests share."""

from __future__ import annotations

from typing import Any

SERVICES = "/api/v1/namespaces/default/services"
ROUTES = "/apis/networking.istio.io/v1/namespaces/default/virtualservices"
MERGE = {"Content-Type": "application/merge-patch+json"}


def service(name: str, port: int = 80, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port}]},
    }


def route(name: str, version: str = "v1", namespace: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": f"networking.istio.io/{version}",
        "kind": "VirtualService",
        "metadata": metadata,
        "spec": {"hosts": [name], "http": [{"route": [{"destination": {"host": name}}]}]},
    }
