"""The transactional outbox for PostgreSQL (psycopg 3): a row and its event in one transaction.

As with sqlite, the service writes its row and the event in one transaction of its own
database, and a relay publishes the outbox and deletes what the broker stored; ids are fixed
when the row is written, so a relay that crashes between publishing and deleting causes a
duplicate the broker recognises, not a second event. A row the broker refuses for good is moved
to `gossamer_outbox_dead` with the broker's reason.

PostgreSQL runs transactions concurrently, so the order of `seq` is not the order of commits.
Two things keep events in order anyway:

- per key: `add` takes a transaction-scoped advisory lock on (topic, key) before the row is
  numbered, so a later event of the key is numbered only after the earlier one's transaction
  has ended, and the relay, reading by `seq`, sees them in commit order;
- one relay at a time: a relay publishes only while it holds a session advisory lock; others
  stand by and take over when its connection ends. Rows are deleted by their `seq`, never by a
  range, so a row that commits late below a published one is still published.

```python
with conn.transaction():                      # psycopg.Connection
    conn.execute("INSERT INTO users VALUES (%s, %s)", (user_id, email))
    PostgresOutbox(conn).add("users", {"userId": user_id}, key=user_id, type="UserAdded")
```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from gossamer.events.client import EventsClient
from gossamer.events.outbox import (
    DeadLetter,
    NewOutboxRow,
    OutboxRow,
    RelayLoop,
    RelaySettings,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS gossamer_outbox (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, topic TEXT NOT NULL,
    id TEXT NOT NULL UNIQUE, key TEXT, type TEXT, time_ms BIGINT NOT NULL,
    headers TEXT NOT NULL, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS gossamer_outbox_dead (
    seq BIGINT PRIMARY KEY, topic TEXT NOT NULL, id TEXT NOT NULL, key TEXT, type TEXT,
    time_ms BIGINT NOT NULL, headers TEXT NOT NULL, payload TEXT NOT NULL,
    error TEXT NOT NULL, failed_at TIMESTAMPTZ NOT NULL);
"""
"""The outbox table and the dead table of the rows the broker refused for good (keyed by the
seq each had in the outbox); `create_outbox_table` runs it, or put it in the service's
migrations."""

_INSERT = (
    "INSERT INTO gossamer_outbox (topic, id, key, type, time_ms, headers, payload) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
_KEY_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
_RELAY_LOCK_NAME = "gossamer-outbox-relay"
_COLUMNS = "seq, topic, id, key, type, time_ms, headers, payload"


class OutboxUsageError(Exception):
    """`add` was called outside a transaction, where the event would commit on its own."""


def create_outbox_table(conn: psycopg.Connection[Any]) -> None:
    """Create the outbox and dead tables if they do not exist (in the connection's
    transaction)."""
    conn.execute(SCHEMA)


class PostgresOutbox:
    """Adds events to the outbox table in the caller's transaction (a sync connection)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def add(
        self,
        topic: str,
        payload: Any,
        *,
        key: str | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Write an event to be published once the caller's transaction commits; its id."""
        _check_in_transaction(self._conn.autocommit, self._conn.info.transaction_status)
        row = NewOutboxRow.create(topic, payload, key, type, headers)
        if key is not None:
            self._conn.execute(_KEY_LOCK, (_key_lock_name(topic, key),))
        self._conn.execute(_INSERT, row.values())
        return row.id


class AsyncPostgresOutbox:
    """Adds events to the outbox table in the caller's transaction (an async connection)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    async def add(
        self,
        topic: str,
        payload: Any,
        *,
        key: str | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Write an event to be published once the caller's transaction commits; its id."""
        _check_in_transaction(self._conn.autocommit, self._conn.info.transaction_status)
        row = NewOutboxRow.create(topic, payload, key, type, headers)
        if key is not None:
            await self._conn.execute(_KEY_LOCK, (_key_lock_name(topic, key),))
        await self._conn.execute(_INSERT, row.values())
        return row.id


class PostgresOutboxRelay(RelayLoop):
    """Publishes a PostgreSQL outbox to the broker while it is the one active relay."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        client: EventsClient,
        settings: RelaySettings | None = None,
    ) -> None:
        super().__init__(client, settings)
        self._conn = conn
        self.active = False

    @classmethod
    async def connect(
        cls, conninfo: str, client: EventsClient, settings: RelaySettings | None = None
    ) -> PostgresOutboxRelay:
        """A relay on its own autocommit connection; creates the outbox tables if needed."""
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        await conn.execute(SCHEMA)
        return cls(conn, client, settings)

    async def close(self) -> None:
        """Close the connection, which lets a standing-by relay take over."""
        await self._conn.close()
        self.active = False

    async def pending(self) -> int:
        """Events waiting in the outbox."""
        cursor = await self._conn.execute("SELECT count(*) FROM gossamer_outbox")
        found = await cursor.fetchone()
        assert found is not None
        count: int = found[0]
        return count

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest rows moved to the dead table, with the broker's reason."""
        cursor = await self._conn.execute(
            f"SELECT {_COLUMNS}, error, failed_at FROM gossamer_outbox_dead ORDER BY seq LIMIT %s",
            (limit,),
        )
        return [
            DeadLetter(OutboxRow(*row[:-2]), row[-2], row[-1].astimezone(UTC))
            for row in await cursor.fetchall()
        ]

    async def _oldest(self, limit: int) -> list[OutboxRow]:
        if not self.active:
            cursor = await self._conn.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (_RELAY_LOCK_NAME,)
            )
            locked = await cursor.fetchone()
            self.active = bool(locked and locked[0])
            if not self.active:
                return []
        cursor = await self._conn.execute(
            f"SELECT {_COLUMNS} FROM gossamer_outbox ORDER BY seq LIMIT %s", (limit,)
        )
        return [OutboxRow(*row) for row in await cursor.fetchall()]

    async def _delete(self, rows: Sequence[OutboxRow]) -> None:
        await self._conn.execute(
            "DELETE FROM gossamer_outbox WHERE seq = ANY(%s)", ([row.seq for row in rows],)
        )

    async def _bury(self, letter: DeadLetter) -> None:
        async with self._conn.transaction():
            await self._conn.execute(
                f"INSERT INTO gossamer_outbox_dead ({_COLUMNS}, error, failed_at) "
                f"SELECT {_COLUMNS}, %s, %s FROM gossamer_outbox WHERE seq = %s",
                (letter.error, letter.failed_at, letter.row.seq),
            )
            await self._conn.execute(
                "DELETE FROM gossamer_outbox WHERE seq = %s", (letter.row.seq,)
            )


def _key_lock_name(topic: str, key: str) -> str:
    return f"gossamer-outbox:{topic}/{key}"


def _check_in_transaction(autocommit: bool, status: TransactionStatus) -> None:
    if autocommit and status is TransactionStatus.IDLE:
        raise OutboxUsageError(
            "add() writes into the caller's transaction; with autocommit on, "
            "call it inside `with conn.transaction():`"
        )
