"""What a sidecar routes for some hosts, as text: the outbound routes of `sidecar_snapshot`.

The routes are computed, not fetched: the same pure translation the control plane runs, over
the objects it serves, for a sidecar of no particular workload in the given namespace.
"""

from __future__ import annotations

from collections.abc import Sequence

from gossamer.resources import Resource
from gossamer.resources.hosts import host_matches, qualify
from gossamer.snapshot.model import (
    Route,
    RouteMatch,
    StringMatch,
    VirtualHost,
)
from gossamer.snapshot.translate import SidecarSpec, sidecar_snapshot

_WORKLOAD = "gossamer-describe"
"""The sidecar's workload: none of the user's, so no workload-specific rule applies."""
_LABEL = 16


def sidecar_hosts(
    resources: Sequence[Resource], namespace: str, hosts: Sequence[str]
) -> list[VirtualHost]:
    """The outbound virtual hosts a sidecar in `namespace` has for these hosts (as written)."""
    sidecar = SidecarSpec(workload=_WORKLOAD, namespace=namespace, service_account="default")
    snapshot = sidecar_snapshot(resources, {}, sidecar, version="describe")
    outbound = next(table for table in snapshot.route_tables if table.name == "outbound")
    wanted = [qualify(host, namespace) for host in hosts]
    return [
        virtual_host
        for virtual_host in outbound.virtual_hosts
        if any(host_matches(w, virtual_host.name.rpartition(":")[0]) for w in wanted)
    ]


def route_lines(route: Route) -> list[str]:
    """A route as `label: value` lines: match, destinations with weights, retries, timeout."""
    lines = [_labelled("match", describe_match(route.match))]
    if route.clusters:
        destinations = [f"{destination(c.cluster)}  weight {c.weight}" for c in route.clusters]
        lines += _labelled_block("destinations", destinations)
    if route.redirect is not None:
        r = route.redirect
        parts = [f"{r.status}", *_named(("scheme", r.scheme), ("authority", r.authority))]
        parts += _named(("port", r.port), ("path", r.path))
        lines.append(_labelled("redirect", " ".join(parts)))
    if route.direct_response is not None:
        answer = route.direct_response
        body = f" {answer.body!r}" if answer.body else ""
        lines.append(_labelled("response", f"{answer.status}{body}"))
    if route.clusters:
        lines.append(_labelled("timeout", _seconds(route.timeout) if route.timeout else "none"))
        lines.append(_labelled("retries", describe_retries(route)))
    lines += _extras(route)
    return lines


def destination(cluster: str) -> str:
    """`outbound|9080|v1|reviews.default.svc.cluster.local` -> `reviews...:9080 subset v1`."""
    parts = cluster.split("|")
    if len(parts) != 4 or parts[0] != "outbound":
        return cluster
    _, port, subset, host = parts
    return f"{host}:{port}" + (f" subset {subset}" if subset else "")


def describe_match(match: RouteMatch) -> str:
    """`uri prefix /api and header end-user exact jason`, or `any request`."""
    parts = [
        f"{what} {_string(value)}"
        for what, value in (
            ("uri", match.path),
            ("method", match.method),
            ("authority", match.authority),
            ("scheme", match.scheme),
        )
        if value is not None
    ]
    for header in match.headers:
        if header.match is None:
            parts.append(f"header {header.name} {'absent' if header.invert else 'present'}")
        else:
            negation = "not " if header.invert else ""
            parts.append(f"header {header.name} {negation}{_string(header.match)}")
    for query in match.query:
        parts.append(f"query {query.name} {_string(query.match) if query.match else 'present'}")
    if match.port is not None:
        parts.append(f"port {match.port}")
    return " and ".join(parts) or "any request"


def describe_retries(route: Route) -> str:
    """`3 attempts on 5xx, reset; 2s per try`, or `none`."""
    retry = route.retries
    if retry is None:
        return "none"
    text = f"{retry.attempts} attempts on {', '.join(retry.retry_on)}"
    if retry.retriable_status_codes:
        text += f" (status {', '.join(str(c) for c in retry.retriable_status_codes)})"
    if retry.per_try_timeout is not None:
        text += f"; {_seconds(retry.per_try_timeout)} per try"
    return text


def _extras(route: Route) -> list[str]:
    lines = [
        _labelled("mirror", f"{destination(m.cluster)}  {m.percent:g}%") for m in route.mirrors
    ]
    fault = route.fault
    if fault is not None and fault.delay is not None:
        lines.append(
            _labelled("fault", f"delay {_seconds(fault.delay)} for {fault.delay_percent:g}%")
        )
    if fault is not None and fault.abort_status is not None:
        lines.append(_labelled("fault", f"abort {fault.abort_status} for {fault.abort_percent:g}%"))
    rewrite = route.rewrite
    if rewrite is not None:
        parts = _named(("uri", rewrite.prefix), ("regex", rewrite.regex))
        parts += _named(("to", rewrite.substitution), ("authority", rewrite.authority))
        lines.append(_labelled("rewrite", " ".join(parts)))
    return lines


def _string(match: StringMatch) -> str:
    kind = "prefix" if match.kind == "path_prefix" else match.kind
    return f"{kind} {match.value}" + (" (any case)" if match.ignore_case else "")


def _named(*pairs: tuple[str, object]) -> list[str]:
    return [f"{name} {value}" for name, value in pairs if value is not None]


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _labelled(label: str, value: str) -> str:
    return f"{label + ':':<{_LABEL}}{value}"


def _labelled_block(label: str, values: list[str]) -> list[str]:
    return [_labelled(label, values[0]), *(" " * _LABEL + value for value in values[1:])]
