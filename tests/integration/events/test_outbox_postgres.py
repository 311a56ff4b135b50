"""The transactional outbox on a real PostgreSQL server: atomic with the service's row,
published once, in commit order per key, by one relay at a time."""

import asyncio
import contextlib

import httpx
import psycopg
import pytest

from gossamer.events.client import EventsClient
from gossamer.events.outbox_postgres import (
    AsyncPostgresOutbox,
    OutboxUsageError,
    PostgresOutbox,
    PostgresOutboxRelay,
    create_outbox_table,
)
from gossamer.events.server import BrokerServer
from gossamer.events.tracecontext import TraceContext

from .harness import eventually


async def test_the_outbox_publishes_committed_rows_only_and_exactly_once(
    client: EventsClient, postgres_db: str
) -> None:
    await client.declare("users", {})
    with psycopg.connect(postgres_db) as conn:
        with conn.transaction():
            create_outbox_table(conn)
            conn.execute("CREATE TABLE users (id TEXT PRIMARY KEY)")
        with conn.transaction():
            conn.execute("INSERT INTO users VALUES ('u1')")
            event_id = PostgresOutbox(conn).add(
                "users", {"userId": "u1"}, key="u1", type="UserAdded"
            )
        with contextlib.suppress(psycopg.errors.UniqueViolation), conn.transaction():
            PostgresOutbox(conn).add("users", {"userId": "u1"}, key="u1", type="UserAdded")
            conn.execute("INSERT INTO users VALUES ('u1')")  # fails: the event is rolled back too
    relay = await PostgresOutboxRelay.connect(postgres_db, client)
    try:
        assert await relay.pending() == 1
        # The relay published, then crashed before deleting: the next relay sends it again.
        await client.publish("users", {"userId": "u1"}, id=event_id, key="u1", type="UserAdded")
        assert await relay.relay_once() == 1
        assert await relay.pending() == 0
    finally:
        await relay.close()
    events = await client.read("users")
    assert [(e.id, e.type, e.payload) for e in events] == [
        (event_id, "UserAdded", {"userId": "u1"})
    ]
    assert TraceContext.parse(events[0].headers) is not None


async def test_a_later_event_of_a_key_waits_for_the_earlier_transaction(
    client: EventsClient, postgres_db: str
) -> None:
    await client.declare("users", {})
    relay = await PostgresOutboxRelay.connect(postgres_db, client)
    first = await psycopg.AsyncConnection.connect(postgres_db)
    second = await psycopg.AsyncConnection.connect(postgres_db)
    other = await psycopg.AsyncConnection.connect(postgres_db)
    try:
        await AsyncPostgresOutbox(first).add("users", {"n": 1}, key="u1")
        later = asyncio.create_task(AsyncPostgresOutbox(second).add("users", {"n": 2}, key="u1"))

        async def second_waits_for_the_lock() -> bool:
            cursor = await relay_conn_query(
                postgres_db,
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                second.info.backend_pid,
            )
            return cursor == 1

        await eventually(second_waits_for_the_lock, what="the second transaction waits")
        # Another key does not wait.
        await AsyncPostgresOutbox(other).add("users", {"n": 3}, key="u2")
        await other.commit()
        await first.commit()
        await asyncio.wait_for(later, 10)
        await second.commit()
        while await relay.relay_once():
            pass
    finally:
        for conn in (first, second, other):
            await conn.close()
        await relay.close()
    events = await client.read("users")
    assert [e.payload["n"] for e in events if e.key == "u1"] == [1, 2]
    assert sorted(e.payload["n"] for e in events) == [1, 2, 3]


async def test_a_row_that_commits_while_the_relay_publishes_is_not_deleted_unsent(
    broker: BrokerServer, postgres_db: str
) -> None:
    slow = await psycopg.AsyncConnection.connect(postgres_db)

    async def commit_slow_row(request: httpx.Request) -> None:
        # The row numbered below the one being published commits while it is published.
        if request.url.path.endswith("/publish") and not slow.closed:
            await slow.commit()

    http = httpx.AsyncClient(base_url=broker.url, event_hooks={"request": [commit_slow_row]})
    async with EventsClient(broker.url, http=http) as client:
        await client.declare("users", {})
        relay = await PostgresOutboxRelay.connect(postgres_db, client)
        try:
            await AsyncPostgresOutbox(slow).add("users", {"n": 1})  # numbered first
            async with await psycopg.AsyncConnection.connect(postgres_db) as fast:
                await AsyncPostgresOutbox(fast).add("users", {"n": 2})
            assert await relay.relay_once() == 1  # only n=2 was committed when it looked
            assert await relay.pending() == 1
            assert await relay.relay_once() == 1
            assert await relay.pending() == 0
        finally:
            await slow.close()
            await relay.close()
        assert [e.payload["n"] for e in await client.read("users")] == [2, 1]


async def test_one_relay_publishes_at_a_time(client: EventsClient, postgres_db: str) -> None:
    await client.declare("users", {})
    first = await PostgresOutboxRelay.connect(postgres_db, client)
    second = await PostgresOutboxRelay.connect(postgres_db, client)
    try:
        async with await psycopg.AsyncConnection.connect(postgres_db) as conn:
            await AsyncPostgresOutbox(conn).add("users", {"n": 1})
        assert await first.relay_once() == 1
        async with await psycopg.AsyncConnection.connect(postgres_db) as conn:
            await AsyncPostgresOutbox(conn).add("users", {"n": 2})
        assert await second.relay_once() == 0  # standing by
        assert (first.active, second.active) == (True, False)
        await first.close()  # its lock goes with its connection: the other takes over

        async def taken_over() -> int:
            return await second.relay_once()

        assert await eventually(taken_over, what="the second relay takes over") == 1
    finally:
        await first.close()
        await second.close()
    assert [e.payload["n"] for e in await client.read("users")] == [1, 2]


def test_adding_outside_a_transaction_is_refused(postgres_db: str) -> None:
    with psycopg.connect(postgres_db, autocommit=True) as conn:
        create_outbox_table(conn)
        with pytest.raises(OutboxUsageError, match="call it inside `with conn"):
            PostgresOutbox(conn).add("users", {"n": 1})
        with conn.transaction():
            PostgresOutbox(conn).add("users", {"n": 1})
        assert conn.execute("SELECT count(*) FROM gossamer_outbox").fetchone() == (1,)


async def relay_conn_query(conninfo: str, sql: str, *params: object) -> object:
    """One value from a query on a connection of its own."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        cursor = await conn.execute(sql, params)
        row = await cursor.fetchone()
        return row[0] if row else None
