"""The Python client's helpers: trace context, tailing, the idempotent consumer, the outbox."""

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from gossamer.events.client import BrokerError, EventsClient, SyncEventsClient
from gossamer.events.idempotency import ProcessedEvents
from gossamer.events.outbox import Outbox, OutboxRelay
from gossamer.events.tracecontext import TraceContext

from .harness import eventually


async def test_an_event_published_while_handling_another_continues_its_trace(
    client: EventsClient,
) -> None:
    await client.declare("orders", {})
    await client.declare("invoices", {})
    await client.publish("orders", {"order": 1})
    async with client.subscribe("orders", "billing", from_beginning=True) as orders:
        order = await anext(orders)
        with order.trace():
            await client.publish("invoices", {"order": 1})
        await orders.ack(order)
    (invoice,) = await client.read("invoices")
    assert order.trace_context is not None and invoice.trace_context is not None
    assert invoice.trace_context.trace_id == order.trace_context.trace_id
    assert invoice.trace_context.span_id != order.trace_context.span_id


async def test_tail_follows_new_events_without_a_group(client: EventsClient) -> None:
    await client.declare("orders", {"partitions": 2})
    await client.publish("orders", "before")
    got: list[object] = []
    async with (
        asyncio.timeout(10),
        contextlib.aclosing(client.tail("orders", start="beginning")) as events,
    ):
        async for event in events:
            got.append(event.payload)
            if event.payload == "after":
                break
            # Published only once the tail is reading: it can only arrive by following.
            await client.publish("orders", "after", key="x")
    assert got == ["before", "after"]
    assert await client.lag() == []  # tailing commits nothing


async def test_the_idempotent_consumer_applies_a_redelivered_event_once(
    client: EventsClient, tmp_path: Path
) -> None:
    await client.declare("orders", {})
    await client.publish("orders", {"amount": 5})
    with ProcessedEvents(tmp_path / "billing.sqlite", consumer="billing") as seen:
        seen.connection.execute("CREATE TABLE charges (event_id TEXT, amount INT)")
        for _ in range(2):  # the consumer dies before its ack: the event comes again
            async with client.subscribe("orders", "billing", from_beginning=True) as orders:
                event = await anext(orders)
                with seen.handle(event.id) as conn:
                    if conn is not None:
                        conn.execute("INSERT INTO charges VALUES (?, ?)", (event.id, 5))
        rows = seen.connection.execute("SELECT count(*) FROM charges").fetchone()
    assert rows == (1,)


def test_a_failed_handler_leaves_the_event_to_be_handled_again(tmp_path: Path) -> None:
    with ProcessedEvents(tmp_path / "c.sqlite", consumer="c") as seen:
        with pytest.raises(RuntimeError), seen.handle("evt-1") as conn:
            assert conn is not None
            raise RuntimeError("mail server down")
        assert seen.first_time("evt-1")
        assert not seen.first_time("evt-1")


async def test_the_outbox_publishes_committed_rows_only_and_exactly_once(
    client: EventsClient, tmp_path: Path
) -> None:
    await client.declare("users", {})
    db = tmp_path / "users.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE users (id TEXT PRIMARY KEY)")
    outbox = Outbox(conn)
    with conn:
        conn.execute("INSERT INTO users VALUES ('u1')")
        event_id = outbox.add("users", {"userId": "u1"}, key="u1", type="UserAdded")
    with contextlib.suppress(sqlite3.IntegrityError), conn:
        outbox.add("users", {"userId": "u1"}, key="u1", type="UserAdded")
        conn.execute("INSERT INTO users VALUES ('u1')")  # fails: the event is rolled back too
    relay = OutboxRelay(db, client)
    try:
        assert relay.pending() == 1
        # The relay published, then crashed before deleting: the next relay sends it again.
        await client.publish("users", {"userId": "u1"}, id=event_id, key="u1", type="UserAdded")
        assert await relay.relay_once() == 1
        assert relay.pending() == 0
    finally:
        relay.close()
        conn.close()
    events = await client.read("users")
    assert [(e.id, e.type, e.payload) for e in events] == [
        (event_id, "UserAdded", {"userId": "u1"})
    ]
    assert TraceContext.parse(events[0].headers) is not None


async def test_the_relay_keeps_going_until_stopped(client: EventsClient, tmp_path: Path) -> None:
    await client.declare("users", {})
    db = tmp_path / "users.sqlite"
    conn = sqlite3.connect(db)
    relay = OutboxRelay(db, client)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        for n in range(3):
            with conn:
                Outbox(conn).add("users", {"n": n})

        async def all_sent() -> bool:
            return len(await client.read("users")) == 3

        await eventually(all_sent, what="outbox relayed")
    finally:
        stop.set()
        await asyncio.wait_for(running, 5)
        relay.close()
        conn.close()
    assert [e.payload["n"] for e in await client.read("users")] == [0, 1, 2]


def test_the_sync_client_works_without_an_event_loop(broker_process: object) -> None:
    process = broker_process()  # type: ignore[operator]
    with SyncEventsClient(process.url) as events:
        with pytest.raises(BrokerError, match="no topic named users"):
            events.publish("users", {"userId": "u1"})
        assert events.topics() == []


async def test_a_new_topic_declared_by_several_clients_at_once_is_created_once(
    client: EventsClient,
) -> None:
    """Two services starting together may both declare the topic they need: none gets a 500."""
    spec = {"partitions": 2, "description": "declared concurrently"}
    answers = await asyncio.gather(*(client.declare("raced", spec) for _ in range(6)))
    assert all(answer["name"] == "raced" for answer in answers)
    described = await client.describe("raced")
    assert len(described["partitions"]) == 2
