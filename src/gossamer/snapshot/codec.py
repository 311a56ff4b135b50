"""Snapshots to and from JSON or YAML files, with semantic checks a decoder cannot make."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from gossamer.snapshot.model import Listener, Route, Snapshot, StringMatch


class SnapshotError(ValueError):
    """A snapshot that cannot be run; the message says where and why."""


def decode(data: bytes | str, *, yaml: bool = False) -> Snapshot:
    """Decode and check a snapshot; raise SnapshotError with a readable reason."""
    try:
        if yaml:
            snapshot = msgspec.yaml.decode(data, type=Snapshot)
        else:
            snapshot = msgspec.json.decode(data, type=Snapshot)
    except msgspec.ValidationError as error:
        raise SnapshotError(str(error)) from None
    except msgspec.DecodeError as error:
        raise SnapshotError(f"not valid {'YAML' if yaml else 'JSON'}: {error}") from None
    check(snapshot)
    return snapshot


def load(path: Path) -> Snapshot:
    """Read a snapshot file (.json, or .yaml/.yml)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SnapshotError(f"{path}: {error.strerror}") from None
    try:
        return decode(data, yaml=path.suffix in (".yaml", ".yml"))
    except SnapshotError as error:
        raise SnapshotError(f"{path}: {error}") from None


def dump(snapshot: Snapshot) -> bytes:
    """A snapshot as JSON, the form the control plane sends and `/config_dump` shows."""
    return msgspec.json.encode(snapshot)


def check(snapshot: Snapshot) -> None:
    """References resolve, names are unique, regexes compile, weights make sense."""
    clusters = {cluster.name for cluster in snapshot.clusters}
    if len(clusters) != len(snapshot.clusters):
        raise SnapshotError("cluster names must be unique")
    tables = {table.name for table in snapshot.route_tables}
    if len(tables) != len(snapshot.route_tables):
        raise SnapshotError("route table names must be unique")
    seen: set[tuple[str, int]] = set()
    for listener in snapshot.listeners:
        if listener.tcp is not None:
            _check_tcp(listener, clusters)
        elif listener.route_table not in tables:
            raise SnapshotError(
                f"listener {listener.name}: no route table named {listener.route_table}"
            )
        if (listener.address, listener.port) in seen and listener.port != 0:
            raise SnapshotError(
                f"listener {listener.name}: {listener.address}:{listener.port} is used twice"
            )
        seen.add((listener.address, listener.port))
    _check_tracing(snapshot)
    for table in snapshot.route_tables:
        for host in table.virtual_hosts:
            for route in host.routes:
                _check_route(route, clusters, f"route table {table.name}, route {route.name}")


def _check_tcp(listener: Listener, clusters: set[str]) -> None:
    route = listener.tcp
    assert route is not None
    where = f"listener {listener.name}"
    for targets in (route.clusters, *(sni.clusters for sni in route.sni)):
        for target in targets:
            if target.cluster not in clusters:
                raise SnapshotError(f"{where}: no cluster named {target.cluster}")
        # Without SNI routes every connection goes to `clusters`; with them, none may.
        if (targets or not route.sni) and sum(c.weight for c in targets) <= 0:
            raise SnapshotError(f"{where}: cluster weights add up to 0")
    if route.connect_attempts < 1:
        raise SnapshotError(f"{where}: connect_attempts must be at least 1")


def _check_route(route: Route, clusters: set[str], where: str) -> None:
    actions = sum(
        1 for present in (route.clusters, route.redirect, route.direct_response) if present
    )
    if actions != 1:
        raise SnapshotError(f"{where}: needs exactly one of clusters, redirect, direct_response")
    named = [c.cluster for c in route.clusters] + [m.cluster for m in route.mirrors]
    for name in named:
        if name not in clusters:
            raise SnapshotError(f"{where}: no cluster named {name}")
    if route.clusters and sum(c.weight for c in route.clusters) <= 0:
        raise SnapshotError(f"{where}: cluster weights add up to 0")
    matches: list[StringMatch | None] = [
        route.match.path,
        route.match.method,
        route.match.authority,
        route.match.scheme,
    ]
    matches.extend(h.match for h in route.match.headers)
    matches.extend(q.match for q in route.match.query)
    if route.cors is not None:
        matches.extend(route.cors.allow_origins)
    for match in matches:
        if match is not None and match.kind == "regex":
            try:
                re.compile(match.value)
            except re.error as error:
                raise SnapshotError(f"{where}: bad regex {match.value!r}: {error}") from None
    if route.rewrite is not None and route.rewrite.regex is not None:
        try:
            re.compile(route.rewrite.regex)
        except re.error as error:
            raise SnapshotError(f"{where}: bad rewrite regex: {error}") from None


def _check_tracing(snapshot: Snapshot) -> None:
    tracing = snapshot.telemetry.tracing
    if tracing is None:
        return
    if not 0.0 <= tracing.sampling <= 100.0:
        raise SnapshotError("telemetry.tracing.sampling: a percentage, 0 to 100")
    provider = tracing.provider
    if provider is not None:
        if not provider.url.startswith(("http://", "https://")):
            raise SnapshotError(f"tracing provider {provider.name}: url must be http(s)://")
        if provider.batch_size < 1 or provider.max_buffered_spans < 1:
            raise SnapshotError(f"tracing provider {provider.name}: batches and buffer hold spans")
        if provider.flush_interval <= 0 or provider.timeout <= 0:
            raise SnapshotError(f"tracing provider {provider.name}: intervals must be positive")
