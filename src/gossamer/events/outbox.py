"""The transactional outbox for sqlite: a row and its event in one local transaction.

The service writes its own row and the event into its own database in one transaction, so
either both happen or neither does. A relay then publishes what the outbox holds, oldest
first, and deletes what the broker stored. Each event's id is fixed when it is written, so a
relay that crashes after publishing and before deleting publishes it again and the broker
answers `duplicate` instead of storing it twice.

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
from collections.abc import Mapping
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
        event_id = new_event_id()
        self._conn.execute(
            "INSERT INTO gossamer_outbox (topic, id, key, type, time_ms, headers, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                topic,
                event_id,
                key,
                type,
                int(time.time() * 1000),
                json.dumps(tracecontext.outgoing(headers)),
                json.dumps(payload),
            ),
        )
        return event_id


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """How much the relay sends at once and how often it looks when the outbox is empty."""

    batch: int = 200
    idle_poll_s: float = 0.2


class OutboxRelay:
    """Publishes a sqlite outbox to the broker, in order, and deletes what was stored."""

    def __init__(
        self, path: Path, client: EventsClient, settings: RelaySettings | None = None
    ) -> None:
        self.settings = settings or RelaySettings()
        self._client = client
        self._conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(_SCHEMA)
        self.published = 0

    def close(self) -> None:
        """Close the relay's connection."""
        self._conn.close()

    async def relay_once(self) -> int:
        """Publish one batch (a run of events of the same topic, oldest first); how many."""
        rows = self._conn.execute(
            "SELECT seq, topic, id, key, type, time_ms, headers, payload FROM gossamer_outbox "
            "ORDER BY seq LIMIT ?",
            (self.settings.batch,),
        ).fetchall()
        if not rows:
            return 0
        topic = rows[0][1]
        run = []
        for row in rows:
            if row[1] != topic:
                break
            run.append(row)
        drafts = [
            Draft(
                json.loads(payload),
                key,
                kind,
                json.loads(headers),
                event_id,
                datetime.fromtimestamp(time_ms / 1000, UTC),
            )
            for _, _, event_id, key, kind, time_ms, headers, payload in run
        ]
        await self._client.publish_batch(topic, drafts)
        self._conn.execute("DELETE FROM gossamer_outbox WHERE seq <= ?", (run[-1][0],))
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

    def pending(self) -> int:
        """Events waiting in the outbox."""
        count: int = self._conn.execute("SELECT count(*) FROM gossamer_outbox").fetchone()[0]
        return count
