"""Outbox rows the broker refuses for good are moved to a dead table, on sqlite and PostgreSQL;
the rows behind them are published in order, and a failure that may pass buries nothing."""

import asyncio
import logging
import socket
import sqlite3
from dataclasses import replace
from pathlib import Path

import httpx
import psycopg
import pytest

from gossamer.events.client import BrokerError, EventsClient
from gossamer.events.outbox import Outbox, OutboxRelay
from gossamer.events.outbox_postgres import AsyncPostgresOutbox, PostgresOutboxRelay
from gossamer.events.server import BrokerServer, Listen
from gossamer.events.service import BrokerService, ServiceConfig

from .harness import eventually

USER_SCHEMA = {
    "type": "object",
    "required": ["userId"],
    "properties": {"userId": {"type": "string"}},
}
# A value the broker quotes in its reason: it may be kept in the dead table, never logged.
BAD_USER = {"userId": ["s3cret-value"]}
BAD_FIELD = "payload.userId"


def add_sqlite(
    db: Path, *payloads: object, topic: str = "users", key: str | None = "u1"
) -> list[str]:
    """Write each payload as its own committed event; their ids."""
    conn = sqlite3.connect(db)
    try:
        ids = []
        for payload in payloads:
            with conn:
                ids.append(Outbox(conn).add(topic, payload, key=key))
        return ids
    finally:
        conn.close()


async def add_postgres(conninfo: str, *payloads: object, key: str = "u1") -> list[str]:
    """Write each payload as its own committed event; their ids."""
    ids = []
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        for payload in payloads:
            async with conn.transaction():
                ids.append(await AsyncPostgresOutbox(conn).add("users", payload, key=key))
    return ids


def closed_port_url() -> str:
    """A local address nothing listens on: connecting is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


async def test_sqlite_a_row_against_the_schema_is_buried_and_the_rest_published_in_order(
    client: EventsClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await client.declare("users", {"schema": USER_SCHEMA})
    db = tmp_path / "users.sqlite"
    relay = OutboxRelay(db, client)
    first, bad, last = add_sqlite(db, {"userId": "a"}, BAD_USER, {"userId": "c"})
    try:
        with caplog.at_level(logging.WARNING, logger="gossamer.events.outbox"):
            assert await relay.relay_once() == 3
        assert await relay.relay_once() == 0
        assert relay.pending() == 0
        assert (relay.published, relay.dead) == (2, 1)
        (letter,) = relay.dead_letters()
    finally:
        relay.close()

    events = await client.read("users")
    assert [(e.id, e.payload) for e in events] == [
        (first, {"userId": "a"}),
        (last, {"userId": "c"}),
    ]

    assert (letter.row.id, letter.row.key, letter.row.payload) == (
        bad,
        "u1",
        '{"userId": ["s3cret-value"]}',
    )
    assert letter.error == "422: payload.userId: ['s3cret-value'] is not of type 'string'"
    with sqlite3.connect(db) as conn:
        stored = conn.execute(
            "SELECT id, topic, error, failed_at FROM gossamer_outbox_dead"
        ).fetchall()
    assert stored == [(bad, "users", letter.error, letter.failed_at.isoformat())]

    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert bad in warning.getMessage() and "users" in warning.getMessage()
    assert BAD_FIELD in warning.getMessage()
    assert "s3cret" not in caplog.text


async def test_sqlite_a_malformed_event_is_buried_too(client: EventsClient, tmp_path: Path) -> None:
    # `last` supersedes `first` (same key): with no minLag, a compaction pass (every 0.1 s
    # here) between publishing and reading removes `first`, as it should.
    await client.declare("profiles", {"compaction": {"enabled": True, "minLag": "1h"}})
    db = tmp_path / "users.sqlite"
    relay = OutboxRelay(db, client)
    conn = sqlite3.connect(db)
    try:
        with conn:
            outbox = Outbox(conn)
            first = outbox.add("profiles", {"n": 1}, key="p1")
            bad = outbox.add("profiles", {"n": 2})  # a compacted topic needs a key: 400
            last = outbox.add("profiles", {"n": 3}, key="p1")
        assert await relay.relay_once() == 3
        assert [d.row.id for d in relay.dead_letters()] == [bad]
        assert relay.dead_letters()[0].error.startswith("400: key: required")
    finally:
        relay.close()
        conn.close()
    assert [e.id for e in await client.read("profiles")] == [first, last]


async def test_sqlite_a_replayed_dead_letter_is_published_with_its_id(
    client: EventsClient, tmp_path: Path
) -> None:
    await client.declare("users", {"schema": USER_SCHEMA})
    db = tmp_path / "users.sqlite"
    relay = OutboxRelay(db, client)
    (bad,) = add_sqlite(db, BAD_USER)
    try:
        assert await relay.relay_once() == 1
        assert relay.dead == 1
        conn = sqlite3.connect(db)
        # As docs/events.md says: fix the payload (or the schema), then move the row back.
        with conn:
            conn.execute(
                "UPDATE gossamer_outbox_dead SET payload = ? WHERE id = ?", ('{"userId": "b"}', bad)
            )
            conn.execute(
                "INSERT INTO gossamer_outbox (topic, id, key, type, time_ms, headers, payload) "
                "SELECT topic, id, key, type, time_ms, headers, payload "
                "FROM gossamer_outbox_dead WHERE id = ?",
                (bad,),
            )
            conn.execute("DELETE FROM gossamer_outbox_dead WHERE id = ?", (bad,))
        conn.close()
        assert await relay.relay_once() == 1
        assert (relay.published, relay.dead, relay.dead_letters()) == (1, 1, [])
    finally:
        relay.close()
    assert [(e.id, e.payload) for e in await client.read("users")] == [(bad, {"userId": "b"})]


async def test_sqlite_a_batch_too_large_for_the_broker_is_sent_row_by_row_not_buried(
    config: ServiceConfig, tmp_path: Path
) -> None:
    small = replace(config, broker=replace(config.broker, max_batch_events=2))
    db = tmp_path / "users.sqlite"
    ids = add_sqlite(db, {"userId": "a"}, {"userId": "b"}, {"userId": "c"})
    server = BrokerServer(BrokerService(small), Listen("127.0.0.1", 0), graceful_s=1.0)
    async with server, EventsClient(server.url) as client:
        await client.declare("users", {})
        relay = OutboxRelay(db, client)
        try:
            assert await relay.relay_once() == 3  # 413 for the three: each alone is fine
            assert (relay.published, relay.dead, relay.pending()) == (3, 0, 0)
        finally:
            relay.close()
        assert [e.id for e in await client.read("users")] == ids


async def test_sqlite_an_unreachable_broker_buries_nothing(tmp_path: Path) -> None:
    db = tmp_path / "users.sqlite"
    add_sqlite(db, {"userId": "a"}, BAD_USER)
    async with EventsClient(closed_port_url()) as nowhere:
        relay = OutboxRelay(db, nowhere)
        try:
            with pytest.raises(httpx.ConnectError):
                await relay.relay_once()
            assert (relay.pending(), relay.dead_letters(), relay.dead) == (2, [], 0)
        finally:
            relay.close()


async def test_sqlite_an_undeclared_topic_is_retried_in_order_not_buried(
    client: EventsClient, tmp_path: Path
) -> None:
    db = tmp_path / "users.sqlite"
    ids = add_sqlite(db, {"userId": "a"}, {"userId": "b"})
    relay = OutboxRelay(db, client)
    try:
        with pytest.raises(BrokerError, match="no topic named users"):
            await relay.relay_once()  # 404: the topic may be declared later
        assert (relay.pending(), relay.dead_letters()) == (2, [])

        stop = asyncio.Event()
        running = asyncio.create_task(relay.run(stop))
        try:
            await client.declare("users", {})

            async def all_sent() -> bool:
                return relay.pending() == 0

            await eventually(all_sent, what="the relay retried")
        finally:
            stop.set()
            await asyncio.wait_for(running, 5)
        assert relay.dead == 0
    finally:
        relay.close()
    assert [e.id for e in await client.read("users")] == ids


def test_a_payload_that_is_not_json_is_refused_when_written(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "users.sqlite")
    try:
        with pytest.raises(ValueError, match="not JSON compliant"), conn:
            Outbox(conn).add("users", {"ratio": float("nan")})
        assert conn.execute("SELECT count(*) FROM gossamer_outbox").fetchone() == (0,)
    finally:
        conn.close()


async def test_postgres_a_row_against_the_schema_is_buried_and_the_rest_published_in_order(
    client: EventsClient, postgres_db: str
) -> None:
    await client.declare("users", {"schema": USER_SCHEMA})
    relay = await PostgresOutboxRelay.connect(postgres_db, client)
    try:
        first, bad, last = await add_postgres(
            postgres_db, {"userId": "a"}, BAD_USER, {"userId": "c"}
        )
        assert await relay.relay_once() == 3
        assert await relay.relay_once() == 0
        assert await relay.pending() == 0
        assert (relay.published, relay.dead) == (2, 1)
        (letter,) = await relay.dead_letters()
    finally:
        await relay.close()

    events = await client.read("users")
    assert [(e.id, e.payload) for e in events] == [
        (first, {"userId": "a"}),
        (last, {"userId": "c"}),
    ]

    assert (letter.row.id, letter.row.key) == (bad, "u1")
    assert letter.error == "422: payload.userId: ['s3cret-value'] is not of type 'string'"
    async with await psycopg.AsyncConnection.connect(postgres_db) as conn:
        cursor = await conn.execute("SELECT id, topic, error, failed_at FROM gossamer_outbox_dead")
        stored = await cursor.fetchall()
    assert stored == [(bad, "users", letter.error, letter.failed_at)]


async def test_postgres_an_unreachable_broker_buries_nothing(postgres_db: str) -> None:
    async with EventsClient(closed_port_url()) as nowhere:
        relay = await PostgresOutboxRelay.connect(postgres_db, nowhere)
        try:
            await add_postgres(postgres_db, {"userId": "a"}, BAD_USER)
            with pytest.raises(httpx.ConnectError):
                await relay.relay_once()
            assert (await relay.pending(), await relay.dead_letters(), relay.dead) == (2, [], 0)
        finally:
            await relay.close()
