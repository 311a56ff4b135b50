"""The embedded log's SQL: schema, appends, reads, offsets and deletions on one sqlite file.

Synchronous and free of threads: `sqlite_log` decides which connection runs what, and when.
Each topic has its own table whose INTEGER PRIMARY KEY `pos` packs (partition, offset), so a
partition is one contiguous rowid range: reads and prefix deletions are range scans of the
table itself, with no second index to maintain.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gossamer.events.log import Appended, PartitionState
from gossamer.events.model import Event, NewEvent
from gossamer.events.topics import TopicConfig

OFFSET_BITS = 40
"""Offsets up to 2**40 (about 10**12) per partition; partitions up to 1024 fit well in 63 bits."""

_OFFSET_MASK = (1 << OFFSET_BITS) - 1
SCHEMA_VERSION = 1
Synchronous = Literal["FULL", "NORMAL"]


def pos(partition: int, offset: int) -> int:
    """The rowid of (partition, offset)."""
    return partition << OFFSET_BITS | offset


def unpos(position: int) -> tuple[int, int]:
    """(partition, offset) of a rowid."""
    return position >> OFFSET_BITS, position & _OFFSET_MASK


@dataclass(frozen=True, slots=True)
class StoredTopic:
    """A topic as the store knows it: its table number and configuration."""

    id: int
    config: TopicConfig

    @property
    def table(self) -> str:
        """The topic's table; named by number so that no user text reaches SQL."""
        return f"events_{self.id}"


def connect(path: Path, synchronous: Synchronous, *, writer: bool) -> sqlite3.Connection:
    """A connection in WAL mode; the writer's commits fsync the WAL when synchronous=FULL."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA temp_store=MEMORY")
    if writer:
        # Checkpoints copy the WAL into the database inside some commit; fewer, larger ones keep
        # that pause rare. The WAL file stays bounded by this many 4 KiB pages between them.
        conn.execute("PRAGMA wal_autocheckpoint=4000")
    else:
        conn.execute("PRAGMA query_only=1")
    return conn


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the catalog tables of an empty file, or check the file's format version."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, SCHEMA_VERSION):
        raise RuntimeError(f"log file format {version} is newer than this broker's")
    conn.executescript(
        f"""
        BEGIN;
        CREATE TABLE IF NOT EXISTS topics (
            id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, config TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS partitions (
            topic_id INTEGER NOT NULL, partition INTEGER NOT NULL,
            next_offset INTEGER NOT NULL, start_offset INTEGER NOT NULL, bytes INTEGER NOT NULL,
            PRIMARY KEY (topic_id, partition)) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS commits (
            grp TEXT NOT NULL, topic_id INTEGER NOT NULL, partition INTEGER NOT NULL,
            next_offset INTEGER NOT NULL,
            PRIMARY KEY (grp, topic_id, partition)) WITHOUT ROWID;
        PRAGMA user_version = {SCHEMA_VERSION};
        COMMIT;
        """
    )


def load_topics(conn: sqlite3.Connection) -> dict[str, StoredTopic]:
    """Every topic in the file."""
    topics: dict[str, StoredTopic] = {}
    for topic_id, name, config in conn.execute("SELECT id, name, config FROM topics"):
        topics[name] = StoredTopic(topic_id, TopicConfig.from_spec(name, json.loads(config)))
    return topics


def load_topic(conn: sqlite3.Connection, name: str) -> StoredTopic | None:
    """One topic as the file holds it now, or None."""
    row = conn.execute("SELECT id, config FROM topics WHERE name = ?", (name,)).fetchone()
    if row is None:
        return None
    return StoredTopic(row[0], TopicConfig.from_spec(name, json.loads(row[1])))


def load_next_offsets(conn: sqlite3.Connection) -> dict[tuple[int, int], int]:
    """(topic id, partition) -> the next offset to write; the writer keeps this in memory."""
    rows = conn.execute("SELECT topic_id, partition, next_offset FROM partitions")
    return {(topic_id, partition): offset for topic_id, partition, offset in rows}


class PartitionTally:
    """What one transaction changes in the partitions table: written once, at its end.

    The writer keeps every partition's next offset in memory (`base`); a transaction's appends
    move them here first, and `apply` makes them current only after the commit.
    """

    __slots__ = ("added", "base", "moved")

    def __init__(self, base: dict[tuple[int, int], int]) -> None:
        self.base = base
        self.moved: dict[tuple[int, int], int] = {}
        self.added: dict[tuple[int, int], int] = {}

    def next_offset(self, topic_id: int, partition: int) -> int:
        """The offset the next event of this partition gets."""
        key = (topic_id, partition)
        moved = self.moved.get(key)
        return self.base[key] if moved is None else moved

    def advance(self, topic_id: int, partition: int, size: int) -> None:
        """One event of `size` bytes was written at the partition's next offset."""
        key = (topic_id, partition)
        self.moved[key] = self.next_offset(topic_id, partition) + 1
        self.added[key] = self.added.get(key, 0) + size

    def new_partition(self, topic_id: int, partition: int) -> None:
        """A partition created in this transaction starts at offset 0."""
        self.moved[(topic_id, partition)] = 0

    def flush(self, conn: sqlite3.Connection) -> None:
        """Write the new next offsets and sizes, inside the transaction."""
        conn.executemany(
            "UPDATE partitions SET next_offset = ?, bytes = bytes + ? "
            "WHERE topic_id = ? AND partition = ?",
            [(o, self.added.get(k, 0), k[0], k[1]) for k, o in self.moved.items()],
        )

    def apply(self) -> None:
        """The transaction committed: its offsets become the writer's."""
        self.base.update(self.moved)


def declare(conn: sqlite3.Connection, existing: StoredTopic | None, config: TopicConfig) -> int:
    """Create or reconfigure a topic's table and partitions; returns the topic id."""
    spec = json.dumps(config.to_spec())
    if existing is None:
        cursor = conn.execute(
            "INSERT INTO topics (name, config) VALUES (?, ?)", (config.name, spec)
        )
        assert cursor.lastrowid is not None
        topic_id = cursor.lastrowid
        table = StoredTopic(topic_id, config).table
        conn.execute(
            f"CREATE TABLE {table} (pos INTEGER PRIMARY KEY, id TEXT NOT NULL, key TEXT, "
            "type TEXT, time_ms INTEGER NOT NULL, headers TEXT NOT NULL, payload TEXT NOT NULL, "
            "size INTEGER NOT NULL)"
        )
        conn.execute(f"CREATE UNIQUE INDEX {table}_id ON {table} (id)")
        first_new = 0
    else:
        topic_id = existing.id
        if config.partitions < existing.config.partitions:
            raise ValueError(
                f"topic {config.name} has {existing.config.partitions} partitions; "
                "partitions can be added but not removed"
            )
        conn.execute("UPDATE topics SET config = ? WHERE id = ?", (spec, topic_id))
        first_new = existing.config.partitions
    if config.compaction:
        table = StoredTopic(topic_id, config).table
        conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_key ON {table} (key)")
    conn.executemany(
        "INSERT INTO partitions VALUES (?, ?, 0, 0, 0)",
        [(topic_id, p) for p in range(first_new, config.partitions)],
    )
    return topic_id


def append(
    conn: sqlite3.Connection,
    topic: StoredTopic,
    events: Sequence[tuple[int, NewEvent]],
    tally: PartitionTally,
) -> list[Appended]:
    """Insert events at their partitions' next offsets, skipping ids already stored."""
    insert = (
        f"INSERT INTO {topic.table} (pos, id, key, type, time_ms, headers, payload, size) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
    )
    results: list[Appended] = []
    for partition, event in events:
        offset = tally.next_offset(topic.id, partition)
        row = (
            partition << OFFSET_BITS | offset,
            event.id,
            event.key,
            event.type,
            event.time_ms,
            event.headers_json,
            event.payload_json,
            event.size,
        )
        if conn.execute(insert, row).rowcount == 1:
            tally.advance(topic.id, partition, event.size)
            results.append(Appended(event.id, partition, offset))
        else:
            results.append(_existing(conn, topic, event.id))
    return results


def _existing(conn: sqlite3.Connection, topic: StoredTopic, event_id: str) -> Appended:
    row = conn.execute(f"SELECT pos FROM {topic.table} WHERE id = ?", (event_id,)).fetchone()
    partition, offset = unpos(row[0])
    return Appended(event_id, partition, offset, duplicate=True)


def read(
    conn: sqlite3.Connection, topic: StoredTopic, partition: int, offset: int, limit: int
) -> list[Event]:
    """Up to `limit` events of one partition from `offset` on."""
    rows = conn.execute(
        f"SELECT pos, id, key, type, time_ms, headers, payload FROM {topic.table} "
        "WHERE pos >= ? AND pos < ? ORDER BY pos LIMIT ?",
        (pos(partition, offset), pos(partition + 1, 0), limit),
    )
    name = topic.config.name
    return [Event(name, partition, position & _OFFSET_MASK, *rest) for position, *rest in rows]


def partition_states(conn: sqlite3.Connection, topic: StoredTopic) -> list[PartitionState]:
    """Start, end and size of each partition."""
    rows = conn.execute(
        "SELECT partition, start_offset, next_offset, bytes FROM partitions "
        "WHERE topic_id = ? ORDER BY partition",
        (topic.id,),
    )
    return [PartitionState(*row) for row in rows]


def offset_for_time(
    conn: sqlite3.Connection, topic: StoredTopic, partition: int, time_ms: int
) -> int | None:
    """The first offset at or after `time_ms`, or None when every event is older."""
    row = conn.execute(
        f"SELECT pos FROM {topic.table} WHERE pos >= ? AND pos < ? AND time_ms >= ? "
        "ORDER BY pos LIMIT 1",
        (pos(partition, 0), pos(partition + 1, 0), time_ms),
    ).fetchone()
    return None if row is None else unpos(row[0])[1]


def commit(
    conn: sqlite3.Connection, group: str, topic: StoredTopic, offsets: Mapping[int, int]
) -> None:
    """Record a group's next offsets."""
    conn.executemany(
        "INSERT INTO commits VALUES (?, ?, ?, ?) ON CONFLICT (grp, topic_id, partition) "
        "DO UPDATE SET next_offset = excluded.next_offset",
        [(group, topic.id, p, offset) for p, offset in offsets.items()],
    )


def committed(conn: sqlite3.Connection, group: str, topic: StoredTopic) -> dict[int, int]:
    """A group's next offsets."""
    rows = conn.execute(
        "SELECT partition, next_offset FROM commits WHERE grp = ? AND topic_id = ?",
        (group, topic.id),
    )
    return dict(rows.fetchall())


def groups(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """(topic, group) pairs with commits."""
    rows = conn.execute(
        "SELECT DISTINCT t.name, c.grp FROM commits c JOIN topics t ON t.id = c.topic_id "
        "ORDER BY t.name, c.grp"
    )
    return [(name, group) for name, group in rows]


def expired_until(
    conn: sqlite3.Connection,
    topic: StoredTopic,
    partition: PartitionState,
    *,
    cutoff_ms: int | None,
    budget_bytes: int | None,
    scan_limit: int,
) -> int:
    """The offset before which retention removes a partition's events (its start if none)."""
    keep_from = partition.start
    rows = conn.execute(
        f"SELECT pos, time_ms, size FROM {topic.table} WHERE pos >= ? AND pos < ? "
        "ORDER BY pos LIMIT ?",
        (pos(partition.partition, partition.start), pos(partition.partition + 1, 0), scan_limit),
    )
    excess = partition.bytes - budget_bytes if budget_bytes is not None else 0
    for position, time_ms, size in rows:
        too_old = cutoff_ms is not None and time_ms < cutoff_ms
        if not too_old and excess <= 0:
            return unpos(position)[1]
        excess -= size
        keep_from = unpos(position)[1] + 1
    return keep_from


def delete_prefix(conn: sqlite3.Connection, topic: StoredTopic, partition: int, until: int) -> int:
    """Remove a partition's events before offset `until`; returns how many were removed."""
    low, high = pos(partition, 0), pos(partition, until)
    count, size = conn.execute(
        f"SELECT count(*), coalesce(sum(size), 0) FROM {topic.table} WHERE pos >= ? AND pos < ?",
        (low, high),
    ).fetchone()
    conn.execute(f"DELETE FROM {topic.table} WHERE pos >= ? AND pos < ?", (low, high))
    conn.execute(
        "UPDATE partitions SET start_offset = max(start_offset, ?), bytes = bytes - ? "
        "WHERE topic_id = ? AND partition = ?",
        (until, size, topic.id, partition),
    )
    return int(count)


def superseded(
    conn: sqlite3.Connection,
    topic: StoredTopic,
    partition: int,
    after: int,
    *,
    cutoff_ms: int,
    scan_limit: int,
) -> tuple[list[int], int | None]:
    """Rowids of keyed events older than the cutoff with a newer event of the same key.

    Scans at most `scan_limit` events from offset `after`; returns the rowids found and where
    the next scan starts (None when the partition is done).
    """
    rows = conn.execute(
        f"SELECT pos, time_ms, key FROM {topic.table} WHERE pos >= ? AND pos < ? "
        "ORDER BY pos LIMIT ?",
        (pos(partition, after), pos(partition + 1, 0), scan_limit),
    ).fetchall()
    newer = f"SELECT 1 FROM {topic.table} WHERE key = ? AND pos > ? LIMIT 1"
    found = [
        position
        for position, time_ms, key in rows
        if key is not None
        and time_ms < cutoff_ms
        and conn.execute(newer, (key, position)).fetchone() is not None
    ]
    if len(rows) < scan_limit:
        return found, None
    return found, unpos(rows[-1][0])[1] + 1


def delete_positions(conn: sqlite3.Connection, topic: StoredTopic, positions: Iterable[int]) -> int:
    """Remove events by rowid (compaction); keeps each partition's byte count right."""
    removed = 0
    for partition, chunk in _by_partition(positions):
        marks = ",".join("?" * len(chunk))
        size = conn.execute(
            f"SELECT coalesce(sum(size), 0) FROM {topic.table} WHERE pos IN ({marks})", chunk
        ).fetchone()[0]
        removed += conn.execute(f"DELETE FROM {topic.table} WHERE pos IN ({marks})", chunk).rowcount
        conn.execute(
            "UPDATE partitions SET bytes = bytes - ? WHERE topic_id = ? AND partition = ?",
            (size, topic.id, partition),
        )
    return removed


def _by_partition(positions: Iterable[int]) -> Iterator[tuple[int, list[int]]]:
    grouped: dict[int, list[int]] = {}
    for position in positions:
        grouped.setdefault(position >> OFFSET_BITS, []).append(position)
    yield from grouped.items()
