"""Event backbone: the embedded sqlite log against NATS JetStream, through the same broker.

Usage: python bench/events_bench.py [--duration 5] [--sql-events 10000000] [--markdown FILE]

For each log, a `gossamer events serve` process (and for JetStream, a nats-server with file
storage) runs on core 0 and the load on core 1 (taskset). Events carry a 200 B JSON payload.
Measured through the broker's HTTP API:

- publish throughput and latency, one event per request (wrk, 16 connections) and in batches of
  100 (wrk, 4 connections); wrk because one Python client process saturates long before the
  broker does; every answer is an acknowledgement, i.e. the event is durably stored;
- end-to-end latency p50/p99 (Python client): publish at a steady 500 events/s, a group member
  receives;
- consumer throughput (Python client): one group member reads and acks 200,000 events.

Then, in-process, appends straight to each log (1 publisher, 64 concurrent publishers of one
event, batches of 100; for sqlite with synchronous=FULL and NORMAL, and how many events share
one fsync), and the SQL aggregates over `--sql-events` events: the log is filled through its
append API, sealed into the Parquet history, and each query runs three times (best kept); an
aggregate over a payload field runs both on the JSON text (`payload->>'value'`) and on the
shredded VARIANT (`data.value`).
The table gives each number for both logs and the ratio embedded / JetStream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from gossamer.events.client import ClientTimeouts, EventsClient
from gossamer.events.history import History, HistorySettings
from gossamer.events.jetstream_log import JetStreamLog, JetStreamLogConfig
from gossamer.events.log import EventLog
from gossamer.events.model import NewEvent, compact_json, new_event_id, now_ms, partition_for
from gossamer.events.sql import QueryEngine, QuerySettings
from gossamer.events.sqlite_log import SqliteLog, SqliteLogConfig
from gossamer.events.topics import TopicConfig

BROKER_CORE = "0"
LOAD_CORE = "1"
PARTITIONS = 6
SQL_QUERIES = {
    "count by type": "SELECT type, count(*) FROM readings GROUP BY type",
    "per day, one type": (
        "SELECT date_trunc('day', time) AS day, count(*) FROM readings "
        "WHERE type = 'ReadingRecorded' GROUP BY day ORDER BY day"
    ),
    # The same aggregate twice: parsing every payload's JSON text, and reading the field's typed
    # column from `data`, the payload as a VARIANT that the Parquet history stores shredded.
    "avg of a JSON field, parsing payload": (
        "SELECT key, avg((payload->>'value')::DOUBLE) FROM readings GROUP BY key"
    ),
    "avg of a JSON field, from data": (
        "SELECT key, avg(data.value::DOUBLE) FROM readings GROUP BY key"
    ),
}


def payload(n: int) -> dict[str, object]:
    """A 200 B JSON payload (compact)."""
    body: dict[str, object] = {"sensor": f"s-{n % 1000:04d}", "value": n % 997 / 10, "pad": ""}
    body["pad"] = "x" * (200 - len(compact_json(body)))
    return body


@dataclass
class Numbers:
    """What one log measured."""

    values: dict[str, float] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(core: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", core, *command] if shutil.which("taskset") else command


class Nats:
    """nats-server with JetStream on file storage."""

    def __init__(self, store: Path) -> None:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        self.port = free_port()
        self.process = subprocess.Popen(
            pinned(
                BROKER_CORE,
                [binary, "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(self.port)],
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("nats-server did not start")
            time.sleep(0.05)
        self.url = f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)


class Broker:
    """`gossamer events serve` as a process."""

    def __init__(self, data: Path, extra: list[str]) -> None:
        command = [sys.executable, "-m", "gossamer", "events", "serve", "--data", str(data)]
        command += ["--listen", "127.0.0.1:0", *extra]
        self.process = subprocess.Popen(
            pinned(BROKER_CORE, command),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "listening on " not in line:
            raise RuntimeError(f"broker did not start: {line!r}")
        self.url = line.split("listening on ")[1].split()[0]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        if self.process.stdout is not None:
            self.process.stdout.close()


async def for_duration(seconds: float, workers: int, work: Callable[[], Awaitable[int]]) -> float:
    """Run `work` in `workers` concurrent loops for `seconds`; events per second done."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            finished = await work()  # not `done += await ...`: that reads `done` before awaiting
            done += finished

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(workers)))
    return done / (time.perf_counter() - started)


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local batch = BATCH
local n = 0
local function event()
  n = n + 1
  return string.format(
    '{"key":"s-%d","type":"ReadingRecorded","payload":{"sensor":"s-%04d","value":%d,"pad":"%s"}}',
    n % 1000, n % 1000, n % 997, string.rep("x", 150))
end
request = function()
  if batch == 1 then
    return wrk.format(nil, nil, nil, event())
  end
  local events = {}
  for i = 1, batch do events[i] = event() end
  return wrk.format(nil, nil, nil, '{"events":[' .. table.concat(events, ",") .. ']}')
end
"""


def wrk(url: str, batch: int, connections: int, duration: float, root: Path) -> dict[str, float]:
    """Publish load from wrk (on the load core): requests/s, latency, and no error allowed."""
    script = root / f"publish-{batch}.lua"
    script.write_text(WRK_SCRIPT.replace("BATCH", str(batch)))
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s", str(script)]
    output = subprocess.run(
        pinned(LOAD_CORE, [*command, f"{url}/topics/readings/publish"]),
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in output or "Socket errors" in output:
        raise RuntimeError(f"wrk saw errors:\n{output}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    return {
        "events/s": rate * batch,
        "p50": _ms(re.search(r"50%\s+([\d.]+)(us|ms|s)", output)),
        "p99": _ms(re.search(r"99%\s+([\d.]+)(us|ms|s)", output)),
    }


def _ms(found: re.Match[str] | None) -> float:
    assert found is not None
    value, unit = float(found.group(1)), found.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


async def http_numbers(url: str, duration: float, root: Path) -> dict[str, float]:
    """Publish (wrk), end-to-end latency and consumer throughput (Python client), one broker."""
    out: dict[str, float] = {}
    async with EventsClient(url, timeouts=ClientTimeouts(read=60)) as client:
        await client.declare("readings", {"partitions": PARTITIONS})
        single = await asyncio.to_thread(wrk, url, 1, 16, duration, root)
        out["publish, 1 event per request, 16 connections (events/s)"] = single["events/s"]
        out["publish, 1 event per request: p50 (ms)"] = single["p50"]
        out["publish, 1 event per request: p99 (ms)"] = single["p99"]
        batched = await asyncio.to_thread(wrk, url, 100, 4, duration, root)
        out["publish, batches of 100, 4 connections (events/s)"] = batched["events/s"]
        out.update(await latency(client, duration))
        out["consume with acks, 1 member (events/s)"] = await consume(client, 200_000)
    return out


async def latency(client: EventsClient, duration: float) -> dict[str, float]:
    await client.declare("pings", {"partitions": PARTITIONS})
    samples: list[float] = []
    async with client.subscribe("pings", "latency") as pings:
        await pings.assignment()
        stop = time.perf_counter() + duration

        async def publish() -> None:
            n = 0
            while time.perf_counter() < stop:
                await client.publish("pings", {"sent": time.perf_counter()}, key=str(n))
                n += 1
                await asyncio.sleep(0.002)

        async def receive() -> None:
            async for event in pings:
                samples.append(time.perf_counter() - event.payload["sent"])
                pings.ack_nowait(event)
                if time.perf_counter() > stop + 1:
                    return

        sender = asyncio.create_task(publish())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receive(), duration + 5)
        await sender
        await pings.flush()
    samples.sort()
    return {
        "end-to-end p50 (ms)": samples[len(samples) // 2] * 1000,
        "end-to-end p99 (ms)": samples[int(len(samples) * 0.99)] * 1000,
    }


async def consume(client: EventsClient, limit: int) -> float:
    total = sum(p["end"] - p["start"] for p in (await client.describe("readings"))["partitions"])
    want = min(limit, total)
    seen = 0
    started = time.perf_counter()
    async with client.subscribe("readings", "bench", from_beginning=True) as events:
        async for event in events:
            events.ack_nowait(event)
            seen += 1
            if seen >= want:
                break
        await events.flush()
    return seen / (time.perf_counter() - started)


async def log_numbers(log: EventLog, duration: float, label: str = "") -> dict[str, float]:
    """Appends straight to the log, in-process: what the broker's HTTP layer adds nothing to."""
    out: dict[str, float] = {}
    await log.open()
    try:
        await log.declare(TopicConfig("direct", partitions=PARTITIONS))
        counter = iter(range(10**12))

        def drafts(count: int) -> list[tuple[int, NewEvent]]:
            events = []
            for _ in range(count):
                n = next(counter)
                body, key, event_id = payload(n), f"s-{n % 1000}", new_event_id()
                event = NewEvent.create(
                    event_id,
                    key,
                    kind="ReadingRecorded",
                    time_ms=now_ms(),
                    headers={},
                    payload=body,
                    payload_json=compact_json(body),
                )
                events.append((partition_for(key, event_id, PARTITIONS), event))
            return events

        async def single() -> int:
            await log.append("direct", drafts(1))
            return 1

        async def hundred() -> int:
            await log.append("direct", drafts(100))
            return 100

        commits = getattr(log, "commits", lambda: 0)
        out[f"log append{label}, 1 publisher, 1 event (events/s)"] = await for_duration(
            duration, 1, single
        )
        before = commits()
        rate = await for_duration(duration, 64, single)
        out[f"log append{label}, 64 publishers, 1 event each (events/s)"] = rate
        if commits():
            out[f"log append{label}, 64 publishers: events per fsync"] = (
                rate * duration / max(1, commits() - before)
            )
        out[f"log append{label}, batches of 100 (events/s)"] = await for_duration(
            duration, 4, hundred
        )
    finally:
        await log.close()
    return out


async def sql_numbers(log: EventLog, root: Path, count: int) -> dict[str, float]:
    """Fill a log with `count` events, seal them into history, time the aggregates."""
    out: dict[str, float] = {}
    await log.open()
    try:
        config = TopicConfig("readings", partitions=PARTITIONS)
        await log.declare(config)
        start_ms = now_ms() - 30 * 24 * 3600 * 1000
        started = time.perf_counter()
        batch = 5000
        for first in range(0, count, batch):
            events = []
            for n in range(first, min(first + batch, count)):
                body = payload(n)
                key = f"s-{n % 1000}"
                event_id = new_event_id()
                kind = "ReadingRecorded" if n % 10 else "SensorReset"
                # Spread over the last 30 days, in publish order.
                at = start_ms + n * (30 * 24 * 3600 * 1000) // count
                event = NewEvent.create(
                    event_id,
                    key,
                    kind=kind,
                    time_ms=at,
                    headers={},
                    payload=body,
                    payload_json=compact_json(body),
                )
                events.append((partition_for(key, event_id, PARTITIONS), event))
            await log.append("readings", events)
        out["SQL: fill the log (events/s)"] = count / (time.perf_counter() - started)
        history = History(root / "history", log, HistorySettings(seal_events=count + 1))
        history.open()
        started = time.perf_counter()
        snapshot = await history.snapshot([config])
        history.release(snapshot)
        out["SQL: seal into Parquet (events/s)"] = count / (time.perf_counter() - started)
        engine = QueryEngine(history, QuerySettings(timeout_s=300, memory_limit="4GB"))
        for name, sql in SQL_QUERIES.items():
            best = min([await timed(engine, sql, config) for _ in range(3)])
            out[f"SQL over {count:,} events: {name} (s)"] = best
    finally:
        await log.close()
    return out


async def timed(engine: QueryEngine, sql: str, config: TopicConfig) -> float:
    started = time.perf_counter()
    await engine.run(sql, [config])
    return time.perf_counter() - started


def run_backend(name: str, root: Path, nats: Nats | None, args: argparse.Namespace) -> Numbers:
    extra = [] if nats is None else ["--nats", nats.url, "--nats-prefix", "bench"]
    broker = Broker(root / name / "broker", extra)
    try:
        numbers = Numbers(asyncio.run(http_numbers(broker.url, args.duration, root)))
    finally:
        broker.stop()
    if nats is None:
        for sync in ("FULL", "NORMAL"):
            log: EventLog = SqliteLog(SqliteLogConfig(root / name / sync, synchronous=sync))
            label = "" if sync == "FULL" else " (synchronous=NORMAL)"
            numbers.values.update(asyncio.run(log_numbers(log, args.duration, label)))
    else:
        log = JetStreamLog(JetStreamLogConfig(nats.url, prefix="benchlog"))
        numbers.values.update(asyncio.run(log_numbers(log, args.duration)))
    if args.sql_events:
        if nats is None:
            log = SqliteLog(SqliteLogConfig(root / name / "sql"))
        else:
            log = JetStreamLog(JetStreamLogConfig(nats.url, prefix="benchsql"))
        numbers.values.update(asyncio.run(sql_numbers(log, root / name / "sql", args.sql_events)))
    return numbers


def table(embedded: Numbers, jetstream: Numbers | None) -> str:
    lines = [
        "| measure | embedded (sqlite) | JetStream | embedded / JetStream |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, value in embedded.values.items():
        other = jetstream.values.get(name) if jetstream else None
        ratio = f"{value / other:.2f}x" if other else "-"
        shown = (
            f"{other:,.3f}"
            if other is not None and other < 100
            else f"{other:,.0f}"
            if other
            else "-"
        )
        mine = f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
        lines.append(f"| {name} | {mine} | {shown} | {ratio} |")
    return "\n".join(lines)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine skews every figure."""
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def machine() -> str:
    memory = subprocess.run(["free", "-h"], capture_output=True, text=True, check=False).stdout
    total = memory.splitlines()[1].split()[1] if memory else "?"
    nats = subprocess.run(
        [shutil.which("nats-server") or "/usr/sbin/nats-server", "--version"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return (
        f"{os.cpu_count()} CPUs (nproc), {total} RAM, {platform.platform()}, "
        f"Python {platform.python_version()}, {nats}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per HTTP measure")
    parser.add_argument("--sql-events", type=int, default=10_000_000, help="0 to skip SQL")
    parser.add_argument("--skip-jetstream", action="store_true")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {int(LOAD_CORE)})
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="gossamer-events-bench-") as tmp:
        root = Path(tmp)
        embedded = run_backend("embedded", root, None, args)
        jetstream = None
        if not args.skip_jetstream:
            (root / "nats").mkdir()
            nats = Nats(root / "nats")
            try:
                jetstream = run_backend("jetstream", root, nats, args)
            finally:
                nats.stop()
    loads = f"load average (1 / 5 / 15 min): {load_before} before, {load_average()} after"
    report = f"{machine()}\n{loads}\n\n{table(embedded, jetstream)}\n"
    print(report)
    if args.markdown:
        args.markdown.write_text(report)


if __name__ == "__main__":
    main()
