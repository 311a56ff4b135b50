"""The sqlite store's SQL: objects, the change log and the revision counter, on one connection.

Synchronous and free of threads: `sqlite` decides which connection runs what. Every write is
one IMMEDIATE transaction that takes the next revision, writes the object row and appends the
change; the change log is trimmed in the same transaction once it is `history + compact_every`
revisions long, and `compacted` records the newest revision trimmed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from gossamer.control.store.errors import (
    AlreadyExistsError,
    ConflictError,
    ExpiredError,
    NotFoundError,
)
from gossamer.control.store.model import (
    EventType,
    ObjectKey,
    ResourceType,
    Scope,
    StoredObject,
    StoreSettings,
    WatchEvent,
    decode,
)

SCHEMA_VERSION = 1
Synchronous = Literal["FULL", "NORMAL"]

_SCHEMA = f"""
BEGIN;
CREATE TABLE IF NOT EXISTS objects (
    type TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    version INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (type, namespace, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER PRIMARY KEY, event TEXT NOT NULL,
    type TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO counters VALUES ('revision', 0), ('compacted', 0);
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""


def connect(path: Path, synchronous: Synchronous, *, writer: bool) -> sqlite3.Connection:
    """A WAL connection; the writer's commits fsync the WAL when synchronous is FULL."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    if not writer:
        conn.execute("PRAGMA query_only=1")
    return conn


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables of a new file, or check that an existing file has this format."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, SCHEMA_VERSION):
        raise RuntimeError(f"store file format {version} is not {SCHEMA_VERSION}")
    conn.executescript(_SCHEMA)


@contextmanager
def _transaction(conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[None]:
    conn.execute(f"BEGIN {mode}")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _counter(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
    return int(row[0])


def head(conn: sqlite3.Connection) -> tuple[int, int]:
    """(newest revision, newest revision trimmed from the change log)."""
    with _transaction(conn, "DEFERRED"):
        return _counter(conn, "revision"), _counter(conn, "compacted")


class LogWriter:
    """The writes, each one transaction on the writer connection."""

    def __init__(self, conn: sqlite3.Connection, settings: StoreSettings) -> None:
        self._conn = conn
        self._settings = settings

    def create(self, key: ObjectKey, text: str) -> WatchEvent:
        """Insert a new object."""
        with _transaction(self._conn):
            if self._current(key) is not None:
                raise AlreadyExistsError(key)
            return self._append(EventType.ADDED, key, text)

    def replace(self, key: ObjectKey, text: str, expected: int | None) -> WatchEvent:
        """Overwrite an object whose version is `expected` (any version when None)."""
        with _transaction(self._conn):
            self._check(key, expected)
            return self._append(EventType.MODIFIED, key, text)

    def delete(self, key: ObjectKey, expected: int | None) -> WatchEvent:
        """Remove an object whose version is `expected` (any version when None)."""
        with _transaction(self._conn):
            _, text = self._check(key, expected)
            return self._append(EventType.DELETED, key, text)

    def _current(self, key: ObjectKey) -> tuple[int, str] | None:
        row = self._conn.execute(
            "SELECT version, body FROM objects WHERE type = ? AND namespace = ? AND name = ?",
            (key.type.path, key.namespace, key.name),
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def _check(self, key: ObjectKey, expected: int | None) -> tuple[int, str]:
        current = self._current(key)
        if current is None:
            raise NotFoundError(key)
        if expected is not None and current[0] != expected:
            raise ConflictError(key, expected, current[0])
        return current

    def _append(self, event: EventType, key: ObjectKey, text: str) -> WatchEvent:
        revision = _counter(self._conn, "revision") + 1
        names = (key.type.path, key.namespace, key.name)
        if event is EventType.DELETED:
            self._conn.execute(
                "DELETE FROM objects WHERE type = ? AND namespace = ? AND name = ?", names
            )
        else:
            self._conn.execute(
                "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?)", (*names, revision, text)
            )
        self._conn.execute(
            "INSERT INTO changes VALUES (?, ?, ?, ?, ?, ?)", (revision, event.value, *names, text)
        )
        self._conn.execute("UPDATE counters SET value = ? WHERE name = 'revision'", (revision,))
        self._compact(revision)
        return WatchEvent(event, StoredObject(key, revision, decode(text, revision)))

    def _compact(self, revision: int) -> None:
        history, step = self._settings.history, self._settings.compact_every
        if revision - _counter(self._conn, "compacted") < history + step:
            return
        floor = revision - history
        self._conn.execute("DELETE FROM changes WHERE revision <= ?", (floor,))
        self._conn.execute("UPDATE counters SET value = ? WHERE name = 'compacted'", (floor,))


def read_object(conn: sqlite3.Connection, key: ObjectKey) -> StoredObject:
    """One object, or NotFoundError."""
    row = conn.execute(
        "SELECT version, body FROM objects WHERE type = ? AND namespace = ? AND name = ?",
        (key.type.path, key.namespace, key.name),
    ).fetchone()
    if row is None:
        raise NotFoundError(key)
    return StoredObject(key, int(row[0]), decode(row[1], int(row[0])))


def read_objects(conn: sqlite3.Connection, scope: Scope) -> tuple[list[StoredObject], int]:
    """Every object in scope, and the revision of that consistent view."""
    query = "SELECT type, namespace, name, version, body FROM objects"
    arguments: tuple[str, ...] = ()
    if scope.type is not None:
        query += " WHERE type = ?"
        arguments = (scope.type.path,)
        if scope.namespace is not None:
            query += " AND namespace = ?"
            arguments += (scope.namespace,)
    with _transaction(conn, "DEFERRED"):
        revision = _counter(conn, "revision")
        rows = conn.execute(query + " ORDER BY type, namespace, name", arguments).fetchall()
    found = []
    for type_path, namespace, name, version, body in rows:
        key = ObjectKey(ResourceType.from_path(type_path), namespace, name)
        stored = StoredObject(key, int(version), decode(body, int(version)))
        if scope.labels.matches(stored.labels):
            found.append(stored)
    return found, revision


def read_changes(conn: sqlite3.Connection, after: int, limit: int) -> list[WatchEvent]:
    """Up to `limit` changes with a revision above `after`; ExpiredError if some were trimmed."""
    with _transaction(conn, "DEFERRED"):
        compacted = _counter(conn, "compacted")
        if after < compacted:
            raise ExpiredError(after, compacted)
        rows = conn.execute(
            "SELECT revision, event, type, namespace, name, body FROM changes "
            "WHERE revision > ? ORDER BY revision LIMIT ?",
            (after, limit),
        ).fetchall()
    return [
        WatchEvent(
            EventType(event),
            StoredObject(
                ObjectKey(ResourceType.from_path(type_path), namespace, name),
                int(revision),
                decode(body, int(revision)),
            ),
        )
        for revision, event, type_path, namespace, name, body in rows
    ]
