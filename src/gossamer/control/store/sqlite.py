"""The default store: one sqlite file in WAL mode, a writer thread, a reader thread, a change feed.

Writes run one at a time on the writer thread; right after each commit, that thread hands the
change to the event loop's `ChangeFeed`, so the feed sees changes in commit order even when the
task that asked for a write was cancelled meanwhile. Reads (gets, lists, history replays) run
on their own connection and thread, so they never wait behind a write's fsync.

Watches read the feed while they keep up and the `changes` table otherwise, so a watch can
resume from a version written before a restart. One process owns a file at a time (a lock file
next to it says so): another process's writes would not reach this one's feed.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self, TypeVar

from gossamer.control.store import sqlite_log
from gossamer.control.store.errors import StoreUnavailableError
from gossamer.control.store.feed import ChangeFeed
from gossamer.control.store.model import (
    Body,
    Listing,
    ObjectKey,
    Scope,
    StoredObject,
    StoreSettings,
    WatchEvent,
    encode,
)

T = TypeVar("T")

FEED_CAPACITY = 4096
"""Recent changes kept in memory for watches that keep up."""


class SqliteStore:
    """A `Store` on one sqlite file; open with `await SqliteStore.open(path)`."""

    def __init__(
        self,
        path: Path,
        settings: StoreSettings,
        connections: tuple[sqlite3.Connection, sqlite3.Connection],
        lock_fd: int,
        head: int,
    ) -> None:
        self.path = path
        self.settings = settings
        self._writer_conn, self._reader_conn = connections
        self._log = sqlite_log.LogWriter(self._writer_conn, settings)
        self._lock_fd = lock_fd
        self._loop = asyncio.get_running_loop()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="gossamer-store-write")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="gossamer-store-read")
        # Never more than the log keeps: a version the log has trimmed must fail the same way
        # whether or not it is still in memory.
        self._feed = ChangeFeed(head, min(FEED_CAPACITY, settings.history))
        self._watches: set[_LogWatch] = set()
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: Path,
        settings: StoreSettings | None = None,
        *,
        synchronous: sqlite_log.Synchronous = "FULL",
    ) -> SqliteStore:
        """Open (or create) the store file and lock it for this process."""
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock(path.with_name(path.name + ".lock"))
        try:
            writer, reader, head = await asyncio.to_thread(_connect, path, synchronous)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(path, settings or StoreSettings(), (writer, reader), lock_fd, head)

    def __repr__(self) -> str:
        return (
            f"<SqliteStore {self.path} revision={self._feed.head} "
            f"{len(self._watches)} watches{' closed' if self._closed else ''}>"
        )

    @property
    def watching(self) -> int:
        """How many watches are open."""
        return len(self._watches)

    async def get(self, key: ObjectKey) -> StoredObject:
        """The object, or NotFoundError."""
        return await self._read(sqlite_log.read_object, self._reader_conn, key)

    async def list(self, scope: Scope) -> Listing:
        """Every object in scope and the revision of that view."""
        items, revision = await self._read(sqlite_log.read_objects, self._reader_conn, scope)
        return Listing(tuple(items), revision)

    async def create(self, key: ObjectKey, body: Body) -> StoredObject:
        """Store a new object."""
        return await self._write(self._log.create, key, encode(body))

    async def replace(
        self, key: ObjectKey, body: Body, expected_version: int | None = None
    ) -> StoredObject:
        """Overwrite an object, optionally only at `expected_version`."""
        return await self._write(self._log.replace, key, encode(body), expected_version)

    async def delete(self, key: ObjectKey, expected_version: int | None = None) -> StoredObject:
        """Remove an object; returns its last state at the deletion's revision."""
        return await self._write(self._log.delete, key, expected_version)

    async def watch(self, scope: Scope, from_version: int) -> _LogWatch:
        """Changes in scope after `from_version`; ExpiredError when the log was trimmed past it."""
        self._check_open()
        watch = _LogWatch(self, scope, from_version)
        await watch.prefetch()
        self._watches.add(watch)
        return watch

    async def close(self) -> None:
        """End watches, finish queued writes, close both connections and the lock."""
        if self._closed:
            return
        self._closed = True
        self._feed.close()
        await self._loop.run_in_executor(self._writer, self._writer_conn.close)
        await self._loop.run_in_executor(self._reader, self._reader_conn.close)
        self._writer.shutdown(wait=False)
        self._reader.shutdown(wait=False)
        os.close(self._lock_fd)

    async def changes_after(self, revision: int) -> Sequence[WatchEvent]:
        """A page of the change log after `revision` (for watches that fell behind the feed)."""
        limit = self.settings.page_size
        return await self._read(sqlite_log.read_changes, self._reader_conn, revision, limit)

    @property
    def feed(self) -> ChangeFeed:
        """The in-process feed of recent changes."""
        return self._feed

    def forget(self, watch: _LogWatch) -> None:
        """A watch ended."""
        self._watches.discard(watch)

    async def _write(self, operation: Callable[..., WatchEvent], *args: object) -> StoredObject:
        self._check_open()
        event = await self._loop.run_in_executor(self._writer, self._commit, operation, args)
        return event.object

    def _commit(self, operation: Callable[..., WatchEvent], args: tuple[object, ...]) -> WatchEvent:
        # On the writer thread: publish before returning, so a cancelled caller loses nothing.
        try:
            event = operation(*args)
        except sqlite3.Error as error:
            raise StoreUnavailableError(f"store {self.path}: {error}") from error
        self._loop.call_soon_threadsafe(self._feed.publish, event)
        return event

    async def _read(self, operation: Callable[..., T], *args: object) -> T:
        self._check_open()
        try:
            return await self._loop.run_in_executor(self._reader, operation, *args)
        except sqlite3.Error as error:
            raise StoreUnavailableError(f"store {self.path}: {error}") from error

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailableError(f"store {self.path} is closed")


class _LogWatch:
    """One watch: events from the feed while it keeps up, from the change log when behind."""

    def __init__(self, store: SqliteStore, scope: Scope, from_version: int) -> None:
        self._store = store
        self._scope = scope
        self._last = from_version
        self._pending: deque[WatchEvent] = deque()
        self._closed = False

    def __repr__(self) -> str:
        return f"<watch {self._scope} after {self._last}, {len(self._pending)} pending>"

    def __aiter__(self) -> Self:
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def prefetch(self) -> None:
        """Read the first page now, so that a too-old version fails at `watch()`."""
        await self._fill()

    async def __anext__(self) -> WatchEvent:
        feed = self._store.feed
        while not self._pending:
            if self._closed or feed.closed:
                self._closed = True
                self._store.forget(self)
                raise StopAsyncIteration
            if not await self._fill():
                await feed.wait_past(self._last)
        return self._pending.popleft()

    async def aclose(self) -> None:
        """Stop watching; an `__anext__` waiting meanwhile ends with StopAsyncIteration."""
        self._closed = True
        self._pending.clear()
        self._store.forget(self)
        self._store.feed.nudge()

    async def _fill(self) -> bool:
        """Queue the next changes in scope; False when there were none at all."""
        events = self._store.feed.since(self._last, self._store.settings.page_size)
        if events is None:
            events = await self._store.changes_after(self._last)
        if not events:
            return False
        self._last = events[-1].revision
        self._pending.extend(event for event in events if self._scope.matches(event.object))
        return True


def _connect(
    path: Path, synchronous: sqlite_log.Synchronous
) -> tuple[sqlite3.Connection, sqlite3.Connection, int]:
    """(writer, reader, newest revision) of a file whose schema is in place."""
    opened: list[sqlite3.Connection] = []
    try:
        opened.append(sqlite_log.connect(path, synchronous, writer=True))
        sqlite_log.create_schema(opened[0])
        opened.append(sqlite_log.connect(path, synchronous, writer=False))
        head, _ = sqlite_log.head(opened[1])
    except (sqlite3.Error, RuntimeError) as error:
        for conn in opened:
            conn.close()
        raise StoreUnavailableError(f"cannot open store {path}: {error}") from error
    return opened[0], opened[1], head


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreUnavailableError(f"{path}: another process uses this store") from None
    return fd
