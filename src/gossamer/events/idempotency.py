"""The idempotent-consumer helper: remember handled event ids in a local sqlite file.

Delivery is at-least-once, so a consumer may see an event again (after a rebalance or a
crash before its ack). Recording the id in the same sqlite transaction as the consumer's own
writes makes the effect happen once:

```python
seen = ProcessedEvents(Path("mailer.sqlite"), consumer="mailer")
with seen.handle(event.id) as conn:
    if conn is not None:                       # first time: do the work in this transaction
        conn.execute("INSERT INTO mails ...")
await deliveries.ack(event)                    # either way the event is done
```
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

_SCHEMA = """
CREATE TABLE IF NOT EXISTS gossamer_processed (
    consumer TEXT NOT NULL, event_id TEXT NOT NULL, at_ms INTEGER NOT NULL,
    PRIMARY KEY (consumer, event_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS gossamer_processed_at ON gossamer_processed (consumer, at_ms);
"""


class ProcessedEvents:
    """Ids of events one consumer has handled, kept for `keep_s` seconds (bounded by time)."""

    def __init__(self, path: Path, consumer: str, *, keep_s: float = 7 * 24 * 3600) -> None:
        self.consumer = consumer
        self.keep_s = keep_s
        self._conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        self._handled = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._conn.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection, for the consumer's own tables in the same file."""
        return self._conn

    @contextmanager
    def handle(self, event_id: str) -> Iterator[sqlite3.Connection | None]:
        """A transaction that records the id; yields None when it was handled before.

        If the block raises, nothing is recorded (the event will be handled again).
        """
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = conn.execute(
                "INSERT INTO gossamer_processed VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (self.consumer, event_id, int(time.time() * 1000)),
            )
            yield conn if cursor.rowcount == 1 else None
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        self._handled += 1
        if self._handled % 1000 == 0:
            self.forget_older_than(self.keep_s)

    def first_time(self, event_id: str) -> bool:
        """Record the id; True if it had not been recorded before."""
        with self.handle(event_id) as conn:
            return conn is not None

    def forget_older_than(self, seconds: float) -> int:
        """Drop ids recorded more than `seconds` ago; returns how many."""
        cutoff = int((time.time() - seconds) * 1000)
        cursor = self._conn.execute(
            "DELETE FROM gossamer_processed WHERE consumer = ? AND at_ms < ?",
            (self.consumer, cutoff),
        )
        return cursor.rowcount
