"""The transactional outbox for sqlite: a row and its event in one local transaction.

The service writes its own row and the event into its own database in one transaction, so
either both happen or neither does. A relay then publishes what the outbox holds, oldest
first, and deletes what the broker stored. Each event's id is fixed when it is written, so a
relay that crashes after publishing and before deleting publishes it again and the broker
answers `duplicate` instead of storing it twice. A row the broker refuses for good (400, 413,
422) is moved to the `gossamer_outbox_dead` table with the broker's reason, so that it neither
holds up the rows behind it nor is lost. The relay loop here is shared with the PostgreSQL
outbox (`gossamer.events.outbox_postgres`).

```python
with conn:                                        # one sqlite transaction
    conn.execute("INSERT INTO users VALUES (?, ?)", (user_id, email))
    Outbox(conn).add("users", {"userId": user_id}, key=user_id, type="UserAdded")
```
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from gossamer.events import tracecontext
from gossamer.events.client import BrokerError, Draft, EventsClient, SchemaError
from gossamer.events.model import new_event_id

log = logging.getLogger(__name__)

_OUTBOX_TABLE = """
CREATE TABLE IF NOT EXISTS gossamer_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, id TEXT NOT NULL UNIQUE,
    key TEXT, type TEXT, time_ms INTEGER NOT NULL, headers TEXT NOT NULL,
    payload TEXT NOT NULL)
"""
# Keyed by the seq the row had in the outbox; `id` is not unique, so that a row replayed and
# refused again can always be buried again. `failed_at` is an ISO 8601 time in UTC.
_DEAD_TABLE = """
CREATE TABLE IF NOT EXISTS gossamer_outbox_dead (
    seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, id TEXT NOT NULL, key TEXT, type TEXT,
    time_ms INTEGER NOT NULL, headers TEXT NOT NULL, payload TEXT NOT NULL,
    error TEXT NOT NULL, failed_at TEXT NOT NULL)
"""
_TABLES = (_OUTBOX_TABLE, _DEAD_TABLE)
_COLUMNS = "seq, topic, id, key, type, time_ms, headers, payload"

REFUSED_FOR_GOOD = frozenset({400, 413, 422})
"""Broker statuses that refuse an event itself (malformed, too large, against the schema):
sending it again cannot succeed. Every other failure is retried, in order."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """An event waiting in an outbox table; headers and payload are JSON text."""

    seq: int
    topic: str
    id: str
    key: str | None
    type: str | None
    time_ms: int
    headers: str
    payload: str

    def draft(self) -> Draft:
        """The event to publish, with the id and time it was written with."""
        return Draft(
            json.loads(self.payload),
            self.key,
            self.type,
            json.loads(self.headers),
            self.id,
            datetime.fromtimestamp(self.time_ms / 1000, UTC),
        )


@dataclass(frozen=True, slots=True)
class NewOutboxRow:
    """The values of an outbox row being written (the database numbers it)."""

    topic: str
    id: str
    key: str | None
    type: str | None
    time_ms: int
    headers: str
    payload: str

    @classmethod
    def create(
        cls,
        topic: str,
        payload: Any,
        key: str | None,
        kind: str | None,
        headers: Mapping[str, str] | None,
    ) -> NewOutboxRow:
        """A row with a new event id, the current time and the current trace context."""
        return cls(
            topic,
            new_event_id(),
            key,
            kind,
            int(time.time() * 1000),
            json.dumps(tracecontext.outgoing(headers)),
            # NaN and infinity are not JSON: refused here, or the relay could never send them.
            json.dumps(payload, allow_nan=False),
        )

    def values(self) -> tuple[str, str, str | None, str | None, int, str, str]:
        """Values for `INSERT ... (topic, id, key, type, time_ms, headers, payload)`."""
        return (
            self.topic,
            self.id,
            self.key,
            self.type,
            self.time_ms,
            self.headers,
            self.payload,
        )


class Outbox:
    """Adds events to the outbox table through the caller's connection and transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        for table in _TABLES:
            conn.execute(table)

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
        row = NewOutboxRow.create(topic, payload, key, type, headers)
        self._conn.execute(
            "INSERT INTO gossamer_outbox (topic, id, key, type, time_ms, headers, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            row.values(),
        )
        return row.id


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An outbox row the broker refused for good, as kept in `gossamer_outbox_dead`."""

    row: OutboxRow
    error: str
    failed_at: datetime

    @classmethod
    def of(cls, row: OutboxRow, error: BrokerError) -> DeadLetter:
        """The row refused now, with the broker's status and reason (every schema violation)."""
        reason = error.reason
        if isinstance(error, SchemaError) and error.violations:
            reason = "; ".join(f"{v['path']}: {v['message']}" for v in error.violations)
        return cls(row, f"{error.status}: {reason}", datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """How much the relay sends at once and how often it looks when the outbox is empty."""

    batch: int = 200
    idle_poll_s: float = 0.2


class RelayLoop(ABC):
    """Publishes an outbox, oldest first, deletes what the broker stored, and buries what it
    refuses for good. `published` and `dead` count the rows each way."""

    def __init__(self, client: EventsClient, settings: RelaySettings | None) -> None:
        self.settings = settings or RelaySettings()
        self._client = client
        self.published = 0
        self.dead = 0

    @abstractmethod
    async def _oldest(self, limit: int) -> list[OutboxRow]:
        """Up to `limit` rows in the order they are to be published (none: nothing to do)."""

    @abstractmethod
    async def _delete(self, rows: Sequence[OutboxRow]) -> None:
        """Delete these rows, and only these."""

    @abstractmethod
    async def _bury(self, letter: DeadLetter) -> None:
        """Move the letter's row from the outbox to the dead table, in one transaction."""

    async def relay_once(self) -> int:
        """Publish one batch (a run of events of the same topic, oldest first); how many rows
        left the outbox, published or buried.

        A batch is stored whole or not at all, so when the broker refuses it for good the run
        is sent again one row at a time, to find the rows it refuses and bury only those.
        """
        rows = await self._oldest(self.settings.batch)
        if not rows:
            return 0
        run = first_run(rows)
        try:
            await self._client.publish_batch(run[0].topic, [row.draft() for row in run])
        except BrokerError as error:
            if error.status not in REFUSED_FOR_GOOD:
                raise
            await self._relay_one_at_a_time(run)
        else:
            await self._delete(run)
            self.published += len(run)
        return len(run)

    async def _relay_one_at_a_time(self, run: Sequence[OutboxRow]) -> None:
        # In order, and each row is gone before the next is sent: a failure that is not
        # for good stops here and leaves this row and the rest to be retried as they were.
        for row in run:
            try:
                await self._client.publish_batch(row.topic, [row.draft()])
            except BrokerError as error:
                if error.status not in REFUSED_FOR_GOOD:
                    raise
                await self._bury(DeadLetter.of(row, error))
                self.dead += 1
                log.warning(
                    "outbox relay: moved event %s of topic %s to gossamer_outbox_dead: %s",
                    row.id,
                    row.topic,
                    _loggable_reason(error),
                )
            else:
                await self._delete([row])
                self.published += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; a failed batch is retried after the idle period."""
        while not stop.is_set():
            try:
                sent = await self.relay_once()
            except (BrokerError, httpx.HTTPError) as error:
                log.warning("outbox relay: %s; retrying", error)
                sent = 0
            if sent == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.idle_poll_s)


def _loggable_reason(error: BrokerError) -> str:
    # A schema violation's message can quote the payload's values: log only the fields.
    if isinstance(error, SchemaError) and error.violations:
        fields = ", ".join(v["path"] for v in error.violations)
        return f"{error.status}: breaks the topic's schema at {fields}"
    return str(error)


def first_run(rows: Sequence[OutboxRow]) -> list[OutboxRow]:
    """The oldest rows that share a topic: what one publish request can carry."""
    topic = rows[0].topic
    run: list[OutboxRow] = []
    for row in rows:
        if row.topic != topic:
            break
        run.append(row)
    return run


class OutboxRelay(RelayLoop):
    """Publishes a sqlite outbox to the broker, in order, and deletes what was stored.

    sqlite has one writer at a time, so the order of `seq` is the order of commits.
    """

    def __init__(
        self, path: Path, client: EventsClient, settings: RelaySettings | None = None
    ) -> None:
        super().__init__(client, settings)
        self._conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        for table in _TABLES:
            self._conn.execute(table)

    def close(self) -> None:
        """Close the relay's connection."""
        self._conn.close()

    def pending(self) -> int:
        """Events waiting in the outbox."""
        count: int = self._conn.execute("SELECT count(*) FROM gossamer_outbox").fetchone()[0]
        return count

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest rows moved to the dead table, with the broker's reason."""
        found = self._conn.execute(
            f"SELECT {_COLUMNS}, error, failed_at FROM gossamer_outbox_dead ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            DeadLetter(OutboxRow(*row[:-2]), row[-2], datetime.fromisoformat(row[-1]))
            for row in found
        ]

    async def _oldest(self, limit: int) -> list[OutboxRow]:
        found = self._conn.execute(
            f"SELECT {_COLUMNS} FROM gossamer_outbox ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()
        return [OutboxRow(*row) for row in found]

    async def _delete(self, rows: Sequence[OutboxRow]) -> None:
        # The rows are consecutive in the outbox (a run of the oldest), and sqlite numbers a new
        # row above every other: the range from the first to the last is these rows only. (Not
        # `seq <= last`: a row sent alone must not take an older one, unsent, with it.)
        self._conn.execute(
            "DELETE FROM gossamer_outbox WHERE seq BETWEEN ? AND ?", (rows[0].seq, rows[-1].seq)
        )

    async def _bury(self, letter: DeadLetter) -> None:
        with _transaction(self._conn):
            self._conn.execute(
                f"INSERT INTO gossamer_outbox_dead ({_COLUMNS}, error, failed_at) "
                f"SELECT {_COLUMNS}, ?, ? FROM gossamer_outbox WHERE seq = ?",
                (letter.error, letter.failed_at.isoformat(), letter.row.seq),
            )
            self._conn.execute("DELETE FROM gossamer_outbox WHERE seq = ?", (letter.row.seq,))


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One transaction on a connection opened with `isolation_level=None` (autocommit)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
