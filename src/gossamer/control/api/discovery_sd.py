"""Prometheus HTTP service discovery: every proxy's admin endpoint, as `http_sd_configs` reads it.

`GET /discovery/v1/prometheus` answers a JSON list of target groups, one per proxy that
announced its admin endpoint in its hello (sidecars, gateways, the VIP proxy), on this replica
or, as their leases last reported them, on the others:

    [{"targets": ["127.0.0.1:41234"],
      "labels": {"__meta_gossamer_namespace": "default", "__meta_gossamer_workload": "reviews-v1",
                 "__meta_gossamer_app": "reviews", "__meta_gossamer_version": "v1",
                 "__meta_gossamer_kind": "sidecar", "__meta_gossamer_node_id": "sidecar~...",
                 "__meta_gossamer_label_app": "reviews", ...}}]

Labels are `__meta_` ones, as Prometheus' own discovery mechanisms give: they are dropped after
relabelling, so a Prometheus configuration chooses which become target labels and under which
names (`gossamer prometheus-config` writes one that keeps Istio's metric labels intact). The
answer is computed from the live streams on each request: a proxy appears once it says hello
and goes when its stream ends (or, on another replica, when that replica's lease says so).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gossamer.control.api.guard import authorize
from gossamer.control.auth import MESH_GROUP, SCRAPE_TARGETS, Access, Verb
from gossamer.control.mesh.service import Mesh
from gossamer.snapshot.translate_clusters import canonical_name, canonical_revision

PATH = "/discovery/v1/prometheus"
META = "__meta_gossamer_"
CLUSTER_DOMAIN = "cluster.local"
_NOT_A_LABEL_CHARACTER = re.compile(r"[^a-zA-Z0-9_]")


class ScrapeTargets:
    """The discovery route of one replica."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh

    async def prometheus(self, request: Request) -> Response:
        """Every proxy's admin endpoint, in Prometheus' http_sd format."""
        authorize(request, Access(Verb.LIST, MESH_GROUP, SCRAPE_TARGETS))
        proxies = [*self.mesh.distributor.status(), *self.mesh.lease_proxies()]
        return JSONResponse(target_groups(proxies))


def target_groups(proxies: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One target group per proxy with an admin endpoint, in a stable order. An endpoint listed
    twice (a proxy that moved here is still in its old replica's lease until that lapses) is
    kept once, from the first listing: this replica's own come first."""
    groups: dict[str, dict[str, Any]] = {}
    for proxy in proxies:
        admin = str(proxy.get("admin") or "")
        if admin and admin not in groups:
            groups[admin] = {"targets": [admin], "labels": target_labels(proxy)}
    return sorted(groups.values(), key=_order)


def target_labels(proxy: Mapping[str, Any]) -> dict[str, str]:
    """The `__meta_gossamer_*` labels of one proxy, from what `proxy-status` reports of it."""
    namespace = str(proxy.get("namespace") or "default")
    workload = str(proxy.get("workload") or "")
    role = str(proxy.get("role") or "sidecar")
    raw = proxy.get("labels")
    pod_labels = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    labels = {
        META + "namespace": namespace,
        META + "workload": workload,
        META + "app": canonical_name(pod_labels, workload),
        META + "version": canonical_revision(pod_labels),
        META + "kind": role,
        META + "node_id": node_id(role, str(proxy.get("address") or ""), workload, namespace),
        META + "proxy": str(proxy.get("name") or proxy.get("proxy") or ""),
        META + "control_plane": str(proxy.get("controlPlane") or ""),
    }
    for key, value in sorted(pod_labels.items()):
        labels[META + "label_" + label_name(key)] = value
    return labels


def node_id(role: str, address: str, workload: str, namespace: str) -> str:
    """Istio's proxy node id, as the proxy's spans carry it (`node_id` tag)."""
    kind = "router" if role == "gateway" else "sidecar"
    domain = f"{namespace}.svc.{CLUSTER_DOMAIN}"
    return f"{kind}~{address or '127.0.0.1'}~{workload}.{namespace}~{domain}"


def label_name(key: str) -> str:
    """A pod label's key as a Prometheus label name, as Kubernetes discovery spells them:
    `app.kubernetes.io/name` -> `app_kubernetes_io_name`."""
    return _NOT_A_LABEL_CHARACTER.sub("_", key)


def _order(group: Mapping[str, Any]) -> tuple[str, str, str]:
    labels = group["labels"]
    return (labels[META + "namespace"], labels[META + "workload"], group["targets"][0])
