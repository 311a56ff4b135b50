"""The table `gossamer get` prints: NAME, a few columns per kind (as kubectl and istioctl show
them), AGE; `-o wide` adds more. Values are read from the objects as the API returns them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

NONE = "<none>"
_GAP = "   "


def _at(data: Any, *path: str) -> Any:
    """The value at a path of mapping keys, or None when any part is missing."""
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _items(data: Any) -> list[Any]:
    return data if isinstance(data, list) else []


def _joined(values: Iterable[Any], empty: str = NONE) -> str:
    text = ",".join(str(value) for value in values if value not in (None, ""))
    return text or empty


def _labels(data: Any) -> str:
    if not isinstance(data, Mapping) or not data:
        return NONE
    return ",".join(f"{key}={value}" for key, value in data.items())


@dataclass(frozen=True, slots=True)
class Column:
    """A titled value of each object; `wide` columns show with `-o wide` only."""

    title: str
    value: Callable[[Mapping[str, Any]], str]
    wide: bool = False


def _service_ports(item: Mapping[str, Any]) -> str:
    ports = _items(_at(item, "spec", "ports"))
    return _joined(
        f"{_at(p, 'port')}{':' + str(_at(p, 'nodePort')) if _at(p, 'nodePort') else ''}"
        f"/{_at(p, 'protocol') or 'TCP'}"
        for p in ports
    )


def _containers(item: Mapping[str, Any], field: str) -> str:
    containers = _items(_at(item, "spec", "template", "spec", "containers"))
    return _joined(_at(c, field) for c in containers)


def _ingress_hosts(item: Mapping[str, Any]) -> str:
    return _joined((_at(rule, "host") for rule in _items(_at(item, "spec", "rules"))), "*")


def _ingress_ports(item: Mapping[str, Any]) -> str:
    return "80, 443" if _items(_at(item, "spec", "tls")) else "80"


def _gateway_hosts(item: Mapping[str, Any]) -> str:
    servers = _items(_at(item, "spec", "servers"))
    return _joined(dict.fromkeys(h for s in servers for h in _items(_at(s, "hosts"))))


def _pod_containers(item: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [c for c in _items(_at(item, "status", "containerStatuses")) if isinstance(c, dict)]


def _pod_ready(item: Mapping[str, Any]) -> str:
    containers = _pod_containers(item)
    return f"{sum(bool(c.get('ready')) for c in containers)}/{len(containers)}"


def _pod_status(item: Mapping[str, Any]) -> str:
    """As kubectl shows it: a container's waiting or terminated reason, else the phase."""
    for container in _pod_containers(item):
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] != "ContainerCreating":
            return str(waiting["reason"])
    phase = str(_at(item, "status", "phase") or NONE)
    if phase == "Succeeded":
        return "Completed"
    if phase == "Pending" and _pod_containers(item):
        return "ContainerCreating"
    return phase


def _hpa_targets(item: Mapping[str, Any]) -> str:
    """`current/target` per metric, as kubectl shows them (`<unknown>` before a reading)."""
    current = {_metric_key(m): m for m in _items(_at(item, "status", "currentMetrics")) if m}
    shown = []
    for metric in _items(_at(item, "spec", "metrics")):
        key = _metric_key(metric)
        source = _at(metric, key[1]) or {}
        target = source.get("target") or {}
        now = _at(current.get(key), key[1], "current") or {}
        if target.get("type") == "Utilization":
            value = now.get("averageUtilization")
            shown.append(
                f"{value if value is not None else '<unknown>'}%/"
                f"{target.get('averageUtilization')}%"
            )
        else:
            shown.append(f"{now.get('averageValue', '<unknown>')}/{target.get('averageValue')}")
    return ", ".join(shown) or NONE


def _metric_key(metric: Any) -> tuple[str, str, str]:
    kind = str(_at(metric, "type") or "")
    field = {"Resource": "resource", "Pods": "pods", "ContainerResource": "containerResource"}
    source = field.get(kind, kind.lower())
    name = _at(metric, source, "name") or _at(metric, source, "metric", "name") or ""
    return kind, source, str(name)


def _plans(item: Mapping[str, Any]) -> str:
    return _joined(_at(plan, "name") for plan in _items(_at(item, "spec", "plans")))


COLUMNS: dict[str, tuple[Column, ...]] = {
    "Service": (
        Column("TYPE", lambda o: str(_at(o, "spec", "type") or "ClusterIP")),
        Column("PORT(S)", _service_ports),
        Column("SELECTOR", lambda o: _labels(_at(o, "spec", "selector")), wide=True),
    ),
    "Deployment": (
        Column("REPLICAS", lambda o: str(_at(o, "spec", "replicas") or 1)),
        Column("CONTAINERS", lambda o: _containers(o, "name"), wide=True),
        Column("IMAGES", lambda o: _containers(o, "image"), wide=True),
        Column("SELECTOR", lambda o: _labels(_at(o, "spec", "selector", "matchLabels")), wide=True),
    ),
    "Ingress": (
        Column("CLASS", lambda o: str(_at(o, "spec", "ingressClassName") or NONE)),
        Column("HOSTS", _ingress_hosts),
        Column("PORTS", _ingress_ports),
    ),
    "VirtualService": (
        Column("GATEWAYS", lambda o: _joined(_items(_at(o, "spec", "gateways")), "mesh")),
        Column("HOSTS", lambda o: _joined(_items(_at(o, "spec", "hosts")))),
    ),
    "DestinationRule": (
        Column("HOST", lambda o: str(_at(o, "spec", "host") or NONE)),
        Column(
            "SUBSETS",
            lambda o: _joined(_at(s, "name") for s in _items(_at(o, "spec", "subsets"))),
            wide=True,
        ),
    ),
    "Gateway": (Column("HOSTS", _gateway_hosts, wide=True),),
    "ServiceEntry": (
        Column("HOSTS", lambda o: _joined(_items(_at(o, "spec", "hosts")))),
        Column("LOCATION", lambda o: str(_at(o, "spec", "location") or "")),
        Column("RESOLUTION", lambda o: str(_at(o, "spec", "resolution") or "")),
    ),
    "PeerAuthentication": (Column("MODE", lambda o: str(_at(o, "spec", "mtls", "mode") or "")),),
    "AuthorizationPolicy": (Column("ACTION", lambda o: str(_at(o, "spec", "action") or "ALLOW")),),
    "Topic": (Column("PARTITIONS", lambda o: str(_at(o, "spec", "partitions") or 1)),),
    "ApiProduct": (
        Column("HOSTS", lambda o: _joined(_items(_at(o, "spec", "hosts")), "*")),
        Column("PLANS", _plans),
    ),
    "Pod": (
        Column("READY", _pod_ready),
        Column("STATUS", _pod_status),
        Column(
            "RESTARTS", lambda o: str(sum(c.get("restartCount", 0) for c in _pod_containers(o)))
        ),
        Column("IP", lambda o: str(_at(o, "status", "podIP") or NONE), wide=True),
        Column("NODE", lambda o: str(_at(o, "spec", "nodeName") or NONE), wide=True),
    ),
    "HorizontalPodAutoscaler": (
        Column(
            "REFERENCE",
            lambda o: (
                f"{_at(o, 'spec', 'scaleTargetRef', 'kind')}/"
                f"{_at(o, 'spec', 'scaleTargetRef', 'name')}"
            ),
        ),
        Column("TARGETS", _hpa_targets),
        Column("MINPODS", lambda o: str(_at(o, "spec", "minReplicas") or 1)),
        Column("MAXPODS", lambda o: str(_at(o, "spec", "maxReplicas") or NONE)),
        Column("REPLICAS", lambda o: str(_at(o, "status", "currentReplicas") or 0)),
    ),
}


def time_left(expiry: float, now: float) -> str:
    """Hours and minutes until `expiry` (seconds since the epoch), e.g. `23h59m`; `EXPIRED`."""
    left = int(expiry - now)
    if left <= 0:
        return "EXPIRED"
    hours, rest = divmod(left, 3600)
    return f"{hours}h{rest // 60:02d}m"


def age(created: object, now: datetime) -> str:
    """kubectl's short age: `42s`, `3m12s`, `25m`, `4h10m`, `17h`, `3d4h`, `45d`, `2y`."""
    if not isinstance(created, str):
        return NONE
    try:
        then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return NONE
    seconds = max(0, int((now - then).total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


def table(
    kind: str,
    items: Sequence[Mapping[str, Any]],
    *,
    namespaces: bool,
    wide: bool,
    now: datetime,
) -> str:
    """The objects as aligned rows under a header, columns three spaces apart."""
    columns = [c for c in COLUMNS.get(kind, ()) if wide or not c.wide]
    header = [*(["NAMESPACE"] if namespaces else []), "NAME", *(c.title for c in columns), "AGE"]
    rows = [header]
    for item in items:
        metadata = _at(item, "metadata") or {}
        rows.append(
            [
                *([str(metadata.get("namespace", ""))] if namespaces else []),
                str(metadata.get("name", "")),
                *(column.value(item) for column in columns),
                age(metadata.get("creationTimestamp"), now),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        _GAP.join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
