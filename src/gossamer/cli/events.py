"""`gossamer events`: run a broker, and publish, consume, tail, query and watch lag from a shell."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.table import Table

from gossamer.events.client import (
    SERVER_ENV,
    BrokerError,
    ClientTimeouts,
    Draft,
    EventsClient,
    ReceivedEvent,
    SubscriptionEnded,
    resolve_server,
)
from gossamer.events.model import format_time

# The broker's port in the table of docs/architecture.md.
DEFAULT_LISTEN = "127.0.0.1:15070"

events_app = typer.Typer(
    name="events",
    help="The event backbone: a broker, and commands to publish, consume and query topics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Server = Annotated[
    str | None,
    typer.Option(
        "--server",
        "-s",
        help="Broker URL (default: $GOSSAMER_EVENTS, then http://127.0.0.1:15070).",
        show_default=False,
    ),
]


class Output(StrEnum):
    """How query and listing commands print."""

    TABLE = "table"
    JSON = "json"
    CSV = "csv"


class Durability(StrEnum):
    """When the log fsyncs: every commit (full) or at checkpoints (normal)."""

    FULL = "full"
    NORMAL = "normal"


@events_app.command("serve")
def serve_command(
    *,
    data: Annotated[
        Path, typer.Option("--data", "-d", help="Folder of the log and its SQL history.")
    ] = Path(".gossamer/events"),
    listen: Annotated[
        str, typer.Option("--listen", "-l", help="HOST:PORT to serve on; port 0 picks one.")
    ] = DEFAULT_LISTEN,
    manifests: Annotated[
        list[Path] | None,
        typer.Option(
            "--filename", "-f", exists=True, help="Topic manifests (files or folders); repeatable."
        ),
    ] = None,
    nats: Annotated[
        str | None,
        typer.Option(
            help="Keep the log in NATS JetStream at this URL (e.g. nats://127.0.0.1:4222) "
            "instead of the embedded sqlite file.",
            show_default=False,
        ),
    ] = None,
    nats_prefix: Annotated[
        str, typer.Option(help="Prefix of the JetStream streams and buckets of this broker.")
    ] = "gossamer",
    durability: Annotated[
        Durability,
        typer.Option(
            help="full: fsync every commit (survives power loss); normal: survives kill -9 only."
        ),
    ] = Durability.FULL,
) -> None:
    """Run an event broker over HTTP until Ctrl-C."""
    # Imported here: the other commands are small HTTP clients and start faster without them.
    from gossamer.events.server import configure_logging, serve
    from gossamer.events.service import ManifestError, ServiceConfig
    from gossamer.listen import Listen

    try:
        address = Listen.parse(listen)
    except ValueError as error:
        _fail(str(error), code=2)
    config = ServiceConfig(
        data_dir=data,
        backend="jetstream" if nats else "sqlite",
        nats_url=nats or "",
        nats_prefix=nats_prefix,
        synchronous="FULL" if durability is Durability.FULL else "NORMAL",
    )
    configure_logging()

    def ready(url: str) -> None:
        sys.stdout.write(f"gossamer events: listening on {url} (data in {data})\n")
        sys.stdout.flush()

    try:
        asyncio.run(serve(config, address, manifests or [], ready))
    except ManifestError as error:
        _fail(f"invalid topic manifests:\n{error}", code=1)
    except OSError as error:
        _fail(f"cannot listen on {listen}: {error.strerror or error}", code=1)


@events_app.command("topics")
def topics_command(
    server: Server = None,
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.TABLE,
) -> None:
    """List topics with their partitions and size."""
    topics = _run(server, lambda client: client.topics())
    if output is Output.JSON:
        typer.echo(json.dumps(topics, indent=2))
        return
    table = Table("topic", "partitions", "offsets", "bytes", "description", box=None)
    for topic in topics:
        table.add_row(
            topic["name"],
            str(topic["partitions"]),
            str(topic["offsets"]),
            str(topic["bytes"]),
            topic.get("description") or "",
        )
    _console().print(table)


@events_app.command("publish")
def publish_command(
    topic: Annotated[str, typer.Argument(help="Topic to publish to.")],
    data: Annotated[
        str, typer.Argument(help="The payload as JSON; '-' reads one payload per line of stdin.")
    ],
    *,
    key: Annotated[str | None, typer.Option("--key", "-k", help="Partition key.")] = None,
    event_type: Annotated[
        str | None, typer.Option("--type", "-t", help="Event type, e.g. UserAdded.")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="NAME=VALUE; repeatable.")
    ] = None,
    server: Server = None,
) -> None:
    """Publish an event (or one per stdin line) and print where it was stored."""
    headers = dict(_header(h) for h in header or [])
    lines = sys.stdin.read().splitlines() if data == "-" else [data]
    payloads = [_json_arg(line) for line in lines if line.strip()]
    if not payloads:
        _fail("nothing to publish", code=2)
    drafts = [Draft(p, key, event_type, headers or None) for p in payloads]
    results = _run(server, lambda client: client.publish_batch(topic, drafts))
    for result in results:
        note = " (duplicate)" if result.duplicate else ""
        typer.echo(f"{topic}/{result.partition}@{result.offset} id={result.id}{note}")


@events_app.command("consume")
def consume_command(
    topic: Annotated[str, typer.Argument(help="Topic to consume.")],
    group: Annotated[str, typer.Option("--group", "-g", help="Consumer group.")] = "gossamer-cli",
    from_beginning: Annotated[
        bool, typer.Option(help="Start a new group at the oldest event instead of the next one.")
    ] = False,
    count: Annotated[
        int | None, typer.Option("--count", "-n", help="Exit after this many events.")
    ] = None,
    server: Server = None,
) -> None:
    """Consume as a member of a group: print each event as a JSON line, then ack it."""

    async def consume(client: EventsClient) -> None:
        seen = 0
        async with client.subscribe(topic, group, from_beginning=from_beginning) as stream:
            async for event in stream:
                _print_event(event)
                await stream.ack(event)
                seen += 1
                if count is not None and seen >= count:
                    return

    _run(server, consume, streaming=True)


@events_app.command("tail")
def tail_command(
    topic: Annotated[str, typer.Argument(help="Topic to follow.")],
    start: Annotated[
        str, typer.Option("--from", help="beginning, end, or an RFC 3339 time.")
    ] = "end",
    partition: Annotated[int | None, typer.Option(help="Only this partition.")] = None,
    count: Annotated[
        int | None, typer.Option("--count", "-n", help="Exit after this many events.")
    ] = None,
    server: Server = None,
) -> None:
    """Follow a topic without a group (nothing is committed): one JSON line per event."""

    async def tail(client: EventsClient) -> None:
        seen = 0
        async with contextlib.aclosing(
            client.tail(topic, start=start, partition=partition)
        ) as events:
            async for event in events:
                _print_event(event)
                seen += 1
                if count is not None and seen >= count:
                    return

    _run(server, tail, streaming=True)


@events_app.command("query")
def query_command(
    sql: Annotated[str, typer.Argument(help="One SELECT; each topic is a table.")],
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.TABLE,
    topic: Annotated[
        str | None, typer.Option(help="Query only this topic (needs only its permission).")
    ] = None,
    server: Server = None,
) -> None:
    """SQL over topic history, e.g. `SELECT type, count(*) FROM users GROUP BY type`."""
    if output is Output.CSV:
        text = _run(server, lambda client: client.query(sql, topic=topic, output="csv"))
        sys.stdout.write(text)
        return
    result = _run(server, lambda client: client.query(sql, topic=topic))
    if output is Output.JSON:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(*result["columns"], box=None)
    for row in result["rows"]:
        table.add_row(*(_cell(value) for value in row))
    console = _console()
    console.print(table)
    more = " (truncated)" if result["truncated"] else ""
    rows = len(result["rows"])
    console.print(f"{rows} row{'s' if rows != 1 else ''}{more} in {result['elapsed_ms']:.0f} ms")


@events_app.command("lag")
def lag_command(
    topic: Annotated[str | None, typer.Option(help="Only this topic.")] = None,
    group: Annotated[str | None, typer.Option("--group", "-g", help="Only this group.")] = None,
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.TABLE,
    server: Server = None,
) -> None:
    """How far each consumer group is behind, per topic and partition."""
    groups = _run(server, lambda client: client.lag(topic, group))
    if output is Output.JSON:
        typer.echo(json.dumps(groups, indent=2))
        return
    table = Table("topic", "group", "members", "partition", "committed", "end", "lag", box=None)
    for entry in groups:
        for part in entry["partitions"]:
            committed = part["committed"]
            table.add_row(
                entry["topic"],
                entry["group"],
                str(entry["members"]),
                str(part["partition"]),
                "-" if committed is None else str(committed),
                str(part["end"]),
                str(part["lag"]),
            )
    _console().print(table)


def _broker(server: str | None) -> str:
    """--server, then $GOSSAMER_EVENTS, then the broker a running `up` of this folder (or a
    parent) started among its apps, then the local default."""
    if server is None and not os.environ.get(SERVER_ENV):
        from gossamer.cli.up import find_state, read_up_file

        state = find_state(Path.cwd())
        running = read_up_file(state) if state is not None else None
        if running is not None and running.get("events"):
            return str(running["events"])
    return resolve_server(server)


def _run(server: str | None, work: Any, *, streaming: bool = False) -> Any:
    """Run one client call (or a streaming loop) and turn failures into one line and exit 1."""
    url = _broker(server)
    # A stream waits for events as long as it takes; the broker's keepalives show it is alive.
    timeouts = ClientTimeouts(read=60.0) if streaming else ClientTimeouts()

    async def main() -> Any:
        async with EventsClient(url, timeouts=timeouts) as client:
            return await work(client)

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except BrokerError as error:
        _fail(error.reason + _violations(error.body))
    except SubscriptionEnded as error:
        _fail(f"the broker ended the subscription: {error}")
    except httpx.ConnectError:
        _fail(f"no broker at {url} (start one with `gossamer events serve`, or pass --server)")
    except httpx.HTTPError as error:
        _fail(f"{url}: {error.__class__.__name__}: {error}")


def _violations(body: Any) -> str:
    if not isinstance(body, dict) or "violations" not in body:
        return ""
    return "".join(f"\n  {v['path']}: {v['message']}" for v in body["violations"][1:])


def _print_event(event: ReceivedEvent) -> None:
    line = {
        "topic": event.topic,
        "partition": event.partition,
        "offset": event.offset,
        "id": event.id,
        "key": event.key,
        "type": event.type,
        "time": format_time(event.time_ms),
        "headers": event.headers,
        "payload": event.payload,
    }
    sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        _fail(f"a header is NAME=VALUE, not {text!r}", code=2)
    return name, value


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        _fail(f"not JSON: {text[:80]!r} ({error})", code=2)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _console() -> Console:
    console = Console(soft_wrap=True, highlight=False)
    if not console.is_terminal:
        console = Console(soft_wrap=True, highlight=False, width=10_000)
    return console


def _fail(message: str, *, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
