"""`gossamer stat`, `edges`, `top`, `tap` and `trace`: what the control plane's built-in
telemetry saw, as Linkerd's viz commands show it (docs/observability.md)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gossamer.cli.session import AllNamespaces, Namespace, Server, Token, fail, namespace_or_default

if TYPE_CHECKING:
    import httpx
    from rich.table import Table

Output = Annotated[str, typer.Option("--output", "-o", help="table or json")]
Window = Annotated[
    str, typer.Option("--window", "-t", help="How far back: 30s, 1m, 10m, 1h (default 1m).")
]
_WORKLOAD_KINDS = ("deploy", "deployment", "deployments", "workload", "workloads", "po", "pod")
_SERVICE_KINDS = ("svc", "service", "services")


def stat(
    target: Annotated[
        str | None,
        typer.Argument(help="SERVICE, svc/SERVICE, deploy or deploy/WORKLOAD (default: services)"),
    ] = None,
    *,
    namespace: Namespace = None,
    all_namespaces: AllNamespaces = False,
    window: Window = "1m",
    output: Output = "table",
    server: Server = None,
    token: Token = None,
) -> None:
    """Golden metrics per service (as its callers saw them) or per workload (as it answered)."""
    kind, name = _target(target)
    space = None if all_namespaces else namespace_or_default(namespace)
    query = {"kind": kind, "window": str(_seconds(window))}
    if space is not None:
        query["namespace"] = space
    answer = _get(server, token, "/telemetry/v1/stat", query)
    items = [item for item in answer["items"] if name is None or item["name"] == name]
    if output == "json":
        typer.echo(json.dumps({**answer, "items": items}, indent=2))
        return
    if not items:
        typer.echo("No traffic found.", err=True)
        return
    titles = ["NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99"]
    if space is None:
        titles.insert(0, "NAMESPACE")
    rows = []
    for item in items:
        row = [item["name"], item["meshed"], *_golden(item)]
        rows.append([item["namespace"], *row] if space is None else row)
    _print(_table(titles, rows))


def edges(
    *,
    namespace: Namespace = None,
    all_namespaces: AllNamespaces = False,
    window: Window = "1m",
    output: Output = "table",
    server: Server = None,
    token: Token = None,
) -> None:
    """Each edge, caller workload -> destination service, with what the caller saw."""
    query = {"window": str(_seconds(window))}
    if not all_namespaces:
        query["namespace"] = namespace_or_default(namespace)
    answer = _get(server, token, "/telemetry/v1/edges", query)
    if output == "json":
        typer.echo(json.dumps(answer, indent=2))
        return
    if not answer["items"]:
        typer.echo("No traffic found.", err=True)
        return
    titles = ["SRC", "DST", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99"]
    _print(_table(titles, [[e["source"], e["destination"], *_golden(e)] for e in answer["items"]]))


def top(
    *,
    namespace: Namespace = None,
    all_namespaces: AllNamespaces = True,
    window: Window = "30s",
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 2.0,
    rows: Annotated[int, typer.Option(help="The busiest N edges.")] = 20,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """The busiest edges now (caller -> service by requests per second), refreshed live."""
    query = {"window": str(_seconds(window))}
    if namespace is not None or not all_namespaces:
        query["namespace"] = namespace_or_default(namespace)

    def frame() -> Table:
        answer = _get(server, token, "/telemetry/v1/edges", query)
        busiest = sorted(answer["items"], key=lambda e: -float(e["rps"]))[:rows]
        titles = ["SRC", "DST", "RPS", "SUCCESS", "FAILED", "LATENCY_P50", "LATENCY_P99"]
        table = _table(
            titles,
            [
                [
                    e["source"],
                    e["destination"],
                    _rps(e["rps"]),
                    _success(e["successRate"]),
                    str(e["failures"]),
                    _ms(e["latencyP50"]),
                    _ms(e["latencyP99"]),
                ]
                for e in busiest
            ],
        )
        table.title = f"busiest edges over the last {window} ({time.strftime('%H:%M:%S')})"
        return table

    if once:
        _print(frame())
        return
    from rich.live import Live

    with Live(frame(), auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(frame(), refresh=True)
        except KeyboardInterrupt:
            pass


def tap(
    service: Annotated[str, typer.Argument(help="The destination service (its name).")],
    *,
    namespace: Namespace = None,
    path: Annotated[str, typer.Option("--path", help="Only paths starting with this.")] = "",
    method: Annotated[str, typer.Option("--method", help="Only this method.")] = "",
    reporter: Annotated[
        str, typer.Option("--reporter", help="source (callers), destination (the service), or both")
    ] = "",
    count: Annotated[int, typer.Option("--count", "-c", help="Stop after N requests.")] = 100,
    duration: Annotated[float, typer.Option("--duration", help="Stop after S seconds.")] = 30.0,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
    server: Server = None,
    token: Token = None,
) -> None:
    """Requests to SERVICE live, as the proxies finish them (admin token only: taps show paths
    and headers). Ends after --count requests or --duration seconds."""
    query = {
        "service": service,
        "namespace": namespace_or_default(namespace),
        "path": path,
        "method": method,
        "reporter": reporter,
        "count": str(count),
        "duration": str(duration),
    }
    for event in _stream(server, token, "/telemetry/v1/tap", query, duration + 15.0):
        if output == "json":
            typer.echo(json.dumps(event))
        elif event.get("end"):
            typer.echo(f"# {event['events']} requests, {event['dropped']} dropped", err=True)
        else:
            typer.echo(_tap_line(event))


def trace(
    trace_id: Annotated[str | None, typer.Argument(help="A trace id (hex).")] = None,
    *,
    service: Annotated[
        str | None, typer.Option("--service", help="Only traces through NAME.NAMESPACE.")
    ] = None,
    slowest: Annotated[bool, typer.Option("--slowest", help="Longest first.")] = False,
    failed: Annotated[bool, typer.Option("--failed", help="Only traces with an error.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="How many traces to list.")] = 20,
    output: Output = "table",
    server: Server = None,
    token: Token = None,
) -> None:
    """A trace as a waterfall; without an id, recent (or slowest, or failed) traces."""
    if trace_id is None:
        query = {"order": "slowest" if slowest else "recent", "limit": str(limit)}
        if service:
            query["service"] = service
        if failed:
            query["errors"] = "true"
        answer = _get(server, token, "/telemetry/v1/traces", query)
        if output == "json":
            typer.echo(json.dumps(answer, indent=2))
            return
        rows = [
            [
                t["traceId"],
                t["root"],
                t["name"],
                t["status"] or "-",
                str(t["spans"]),
                _ms(t["duration"] / 1000),
                "yes" if t["error"] else "",
                time.strftime("%H:%M:%S", time.localtime(t["start"] / 1e6)),
            ]
            for t in answer["items"]
        ]
        titles = ["TRACE", "ROOT", "NAME", "STATUS", "SPANS", "DURATION", "ERROR", "START"]
        _print(_table(titles, rows))
        if not rows:
            typer.echo("No traces found.", err=True)
        return
    answer = _get(server, token, f"/telemetry/v1/traces/{trace_id}", {})
    if output == "json":
        typer.echo(json.dumps(answer, indent=2))
        return
    _print(waterfall(answer["spans"]))


def waterfall(spans: list[dict[str, Any]], width: int = 40) -> Table:
    """A trace's spans as a tree (children under their parent), each with a bar placed on the
    trace's time line."""
    ids = {span["id"] for span in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        parent = span.get("parentId") if span.get("parentId") in ids else None
        children.setdefault(parent, []).append(span)
    start = min(span["timestamp"] for span in spans)
    end = max(span["timestamp"] + span["duration"] for span in spans)
    total = max(end - start, 1)
    rows = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s["timestamp"]):
            left = int((span["timestamp"] - start) / total * width)
            length = max(1, round(span["duration"] / total * width))
            bar = " " * left + "█" * min(length, width - left if left < width else 1)
            rows.append(
                [
                    "  " * depth + span["service"],
                    span["kind"] or "-",
                    span["name"],
                    span["tags"].get("http.status_code", "-"),
                    _ms(span["duration"] / 1000),
                    bar,
                ]
            )
            walk(span["id"], depth + 1)

    walk(None, 0)
    titles = ["SERVICE", "KIND", "NAME", "STATUS", "DURATION", "TIMELINE"]
    table = _table(titles, rows)
    table.title = f"trace {spans[0]['traceId']}: {len(spans)} spans, {_ms(total / 1000)}"
    return table


def _target(target: str | None) -> tuple[str, str | None]:  # noqa: RET503 - fail() exits
    """(kind, name or None) of `stat`'s argument."""
    if target is None:
        return "service", None
    kind, slash, name = target.partition("/")
    if not slash:
        if kind.lower() in _WORKLOAD_KINDS:
            return "workload", None
        if kind.lower() in _SERVICE_KINDS:
            return "service", None
        return "service", target
    if kind.lower() in _WORKLOAD_KINDS:
        return "workload", name or None
    if kind.lower() in _SERVICE_KINDS:
        return "service", name or None
    fail(f"unknown kind {kind!r}: use svc/NAME or deploy/NAME", 2)


def _seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        fail(f"not a duration: {text!r} (say 30s, 5m or 1h)", 2)


def _golden(item: Mapping[str, Any]) -> list[str]:
    return [
        _success(item["successRate"]),
        _rps(item["rps"]),
        _ms(item["latencyP50"]),
        _ms(item["latencyP95"]),
        _ms(item["latencyP99"]),
    ]


def _success(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.2f}%"


def _rps(rps: float) -> str:
    return f"{rps:.1f}rps"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}ms" if value >= 10 else f"{value:.1f}ms"


def _tap_line(event: Mapping[str, Any]) -> str:
    return (
        f"{event['reporter'][:3]} proxy={event['proxy']} src={event['source']} "
        f"dst={event['destination']} :method={event['method']} "
        f":authority={event['authority']} :path={event['path']} status={event['status']} "
        f"latency={event['duration_ms']}ms id={event['request_id']}"
    )


def _table(titles: list[str], rows: list[list[str]]) -> Table:
    from rich.table import Table

    table = Table(*titles, box=None)
    for row in rows:
        table.add_row(*row)
    return table


def _print(table: Table) -> None:
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 250  # a pipe or a file gets whole names, not names cut to 80 columns
    console.print(table)


def _client(server: str | None, token: str | None) -> tuple[httpx.Client, str]:
    import httpx

    from gossamer.control.connection import ConnectionSettingsError, resolve_connection
    from gossamer.security.trust import client_context

    try:
        connection = resolve_connection(server, token, os.environ, Path.cwd())
    except ConnectionSettingsError as error:
        fail(str(error))
    headers = {"Authorization": f"Bearer {connection.token}"} if connection.token else {}
    client = httpx.Client(
        base_url=connection.server,
        headers=headers,
        timeout=10.0,
        verify=client_context(connection.ca_file),
    )
    return client, f"{connection.server} ({connection.server_origin})"


def _get(server: str | None, token: str | None, path: str, query: dict[str, str]) -> Any:
    import httpx

    client, where = _client(server, token)
    with client:
        try:
            response = client.get(path, params=query)
        except httpx.HTTPError as error:
            fail(f"no answer from the control plane at {where}: {error}")
        _check(response)
        return response.json()


def _stream(
    server: str | None, token: str | None, path: str, query: dict[str, str], timeout: float
) -> Iterator[dict[str, Any]]:
    import httpx

    client, where = _client(server, token)
    with client:
        try:
            with client.stream("GET", path, params=query, timeout=timeout) as response:
                if response.is_error:
                    response.read()
                    _check(response)
                for line in response.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.HTTPError as error:
            fail(f"the tap from {where} ended: {error}")


def _check(response: httpx.Response) -> None:
    if not response.is_error:
        return
    try:
        body = response.json()
        message = body.get("message", response.text)
        reason = body.get("reason", response.status_code)
    except ValueError:
        message, reason = response.text, response.status_code
    typer.echo(f"Error from server ({reason}): {message}", err=True)
    raise typer.Exit(1)
