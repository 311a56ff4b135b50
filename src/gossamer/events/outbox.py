"""The transactional outbox for sqlite: a row and its event in one local transaction.

The service writes its own row and the event into its own database in one transaction, so
either both happen or neither does. A relay then publishes what the outbox holds, oldest
first, and deletes what the broker stored. Each event's id is fixed when it is written, so a
relay that crashes after publishing and before deleting publishes it again and the broker
answers `duplicate` instead of storing it twice. The relay loop here is shared with the
PostgreSQL outbox (`gossamer.events.outbox_postgres`).

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from gossamer.events import tracecontext
from gossamer.events.client import BrokerError, Draft, EventsClient
from gossamer.events.model import new_event_id

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS gossamer_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, id TEXT NOT NULL UNIQUE,
    key TEXT, type TEXT, time_ms INTEGER NOT NULL, headers TEXT NOT NULL,
    payload TEXT NOT NULL)
"""
_COLUMNS = "seq, topic, id, key, type, time_ms, headers, payload"


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
            json.dumps(payload),
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
        conn.execute(_SCHEMA)

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
class RelaySettings:
    """How much the relay sends at once and how often it looks when the outbox is empty."""

    batch: int = 200
    idle_poll_s: float = 0.2


class RelayLoop(ABC):
    """Publishes an outbox, oldest first, and deletes what the broker stored."""

    def __init__(self, client: EventsClient, settings: RelaySettings | None) -> None:
        self.settings = settings or RelaySettings()
        self._client = client
        self.published = 0

    @abstractmethod
    async def _oldest(self, limit: int) -> list[OutboxRow]:
        """Up to `limit` rows in the order they are to be published (none: nothing to do)."""

    @abstractmethod
    async def _delete(self, rows: Sequence[OutboxRow]) -> None:
        """Delete these rows, and only these."""

    async def relay_once(self) -> int:
        """Publish one batch (a run of events of the same topic, oldest first); how many."""
        rows = await self._oldest(self.settings.batch)
        if not rows:
            return 0
        run = first_run(rows)
        await self._client.publish_batch(run[0].topic, [row.draft() for row in run])
        await self._delete(run)
        self.published += len(run)
        return len(run)

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
        self._conn.execute(_SCHEMA)

    def close(self) -> None:
        """Close the relay's connection."""
        self._conn.close()

    def pending(self) -> int:
        """Events waiting in the outbox."""
        count: int = self._conn.execute("SELECT count(*) FROM gossamer_outbox").fetchone()[0]
        return count

    async def _oldest(self, limit: int) -> list[OutboxRow]:
        found = self._conn.execute(
            f"SELECT {_COLUMNS} FROM gossamer_outbox ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()
        return [OutboxRow(*row) for row in found]

    async def _delete(self, rows: Sequence[OutboxRow]) -> None:
        # The run is the oldest rows, and nothing can commit below them: one range covers it.
        self._conn.execute("DELETE FROM gossamer_outbox WHERE seq <= ?", (rows[-1].seq,))
