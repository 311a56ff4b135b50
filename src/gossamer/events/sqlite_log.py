"""The embedded log: one sqlite file in WAL mode, one writer thread that group-commits.

Durability policy: an append is acknowledged only after the transaction holding it has
committed with `synchronous=FULL`, which fsyncs the WAL, so acknowledged events survive a
kill -9 of the broker and a power cut. Every publisher, ack and retention job queued while one
commit is in flight joins the next transaction: many publishers share one fsync (group
commit), with no timer and no added latency when the broker is idle. Retention and
compaction find their work on reader connections and delete in small chunks, at most one
chunk per transaction, so publishers never wait behind a long delete.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gossamer.events import sqlite_store as store
from gossamer.events.errors import InvalidRequestError, OverloadedError, UnknownTopicError
from gossamer.events.log import Appended, AppendSignal, Maintenance, PartitionState
from gossamer.events.model import Event, NewEvent
from gossamer.events.sqlite_store import PartitionTally, StoredTopic, Synchronous
from gossamer.events.topics import TopicConfig

T = TypeVar("T")
LOG_FILE = "log.sqlite"


@dataclass(frozen=True, slots=True)
class SqliteLogConfig:
    """Where the log lives and the bounds of its writer and readers."""

    data_dir: Path
    synchronous: Synchronous = "FULL"
    max_group_jobs: int = 1024
    max_pending_jobs: int = 8192
    queue_timeout_s: float = 10.0
    readers: int = 4
    maintenance_chunk: int = 2000
    maintenance_scan: int = 20_000

    @property
    def path(self) -> Path:
        """The log file."""
        return self.data_dir / LOG_FILE


@dataclass(slots=True)
class _Job:
    run: Callable[[sqlite3.Connection, PartitionTally], Any]
    future: asyncio.Future[Any]
    topic: str | None


# What a job raises when it, and not the database, is at fault: only that job fails.
_JOB_ERRORS = (sqlite3.IntegrityError, ValueError, KeyError)


class _Writer:
    """The only thread that writes: takes queued jobs, runs them in one transaction, commits."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        next_offsets: dict[tuple[int, int], int],
        loop: asyncio.AbstractEventLoop,
        signal: AppendSignal,
        max_group: int,
    ) -> None:
        self._conn = conn
        self._offsets = next_offsets
        self._loop = loop
        self._signal = signal
        self._max_group = max_group
        self._urgent: deque[_Job] = deque()
        self._background: deque[_Job] = deque()
        self._ready = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="gossamer-log-writer", daemon=True)
        self.transactions = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: _Job, *, background: bool) -> None:
        with self._ready:
            (self._background if background else self._urgent).append(job)
            self._ready.notify()

    def stop(self, timeout: float) -> None:
        with self._ready:
            self._stopping = True
            self._ready.notify()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            # A truncated WAL makes the next start (and a copy of the file) quick.
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not (self._urgent or self._background or self._stopping):
                    self._ready.wait()
                if not (self._urgent or self._background):
                    return
                count = min(len(self._urgent), self._max_group)
                jobs = [self._urgent.popleft() for _ in range(count)]
                if self._background and len(jobs) < self._max_group:
                    jobs.append(self._background.popleft())
            self._run_group(jobs)

    def _run_group(self, jobs: list[_Job]) -> None:
        settled: list[tuple[asyncio.Future[Any], bool, Any]]
        try:
            values = self._commit(jobs)
            settled = [(job.future, True, v) for job, v in zip(jobs, values, strict=True)]
        except _JOB_ERRORS:
            # One job is at fault: run each alone, so that only that one fails.
            settled = [self._run_alone(job) for job in jobs]
        except sqlite3.Error as error:
            failure = OverloadedError(f"the log could not commit: {error}")
            settled = [(job.future, False, failure) for job in jobs]
        topics = {job.topic for job, (_, ok, _) in zip(jobs, settled, strict=True) if ok}
        self._loop.call_soon_threadsafe(_settle_all, settled, self._signal, topics)

    def _run_alone(self, job: _Job) -> tuple[asyncio.Future[Any], bool, Any]:
        try:
            (value,) = self._commit([job])
        except _JOB_ERRORS as error:
            return job.future, False, error
        except sqlite3.Error as error:
            return job.future, False, OverloadedError(f"the log could not commit: {error}")
        return job.future, True, value

    def _commit(self, jobs: list[_Job]) -> list[Any]:
        """One transaction, one fsync (synchronous=FULL) for every job given."""
        conn = self._conn
        tally = PartitionTally(self._offsets)
        conn.execute("BEGIN IMMEDIATE")
        try:
            values = [job.run(conn, tally) for job in jobs]
            tally.flush(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        tally.apply()
        self.transactions += 1
        return values


def _settle_all(
    settled: list[tuple[asyncio.Future[Any], bool, Any]],
    signal: AppendSignal,
    topics: set[str | None],
) -> None:
    for future, ok, value in settled:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
    for topic in topics:
        if topic is not None:
            signal.bump(topic)


class SqliteLog:
    """The embedded EventLog: durable on one machine, in one sqlite file per broker."""

    def __init__(self, config: SqliteLogConfig) -> None:
        self.config = config
        self._signal = AppendSignal()
        self._topics: dict[str, StoredTopic] = {}
        self._writer: _Writer | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._room: asyncio.Semaphore | None = None

    def __repr__(self) -> str:
        writer = self._writer
        done = writer.transactions if writer else 0
        return f"<SqliteLog {self.config.path}: {len(self._topics)} topics, {done} commits>"

    def commits(self) -> int:
        """Transactions committed since open: each is one fsync of the WAL when FULL."""
        return self._writer.transactions if self._writer else 0

    async def open(self) -> None:
        """Create or open the log file and start the writer thread."""
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        conn = store.connect(self.config.path, self.config.synchronous, writer=True)
        store.create_schema(conn)
        self._topics = store.load_topics(conn)
        offsets = store.load_next_offsets(conn)
        loop = asyncio.get_running_loop()
        self._writer = _Writer(conn, offsets, loop, self._signal, self.config.max_group_jobs)
        self._writer.start()
        self._readers = ThreadPoolExecutor(self.config.readers, "gossamer-log-reader")
        self._room = asyncio.Semaphore(self.config.max_pending_jobs)

    async def close(self) -> None:
        """Let queued writes finish, then close every connection."""
        if self._writer is not None:
            await asyncio.to_thread(self._writer.stop, 30.0)
            self._writer = None
        if self._readers is not None:
            self._readers.shutdown(wait=True)
            self._readers = None
        with self._reader_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()

    def appended(self) -> AppendSignal:
        """Wakes readers when events are appended."""
        return self._signal

    async def declare(self, config: TopicConfig) -> None:
        """Create a topic or apply a new configuration (partitions can only grow)."""

        def run(conn: sqlite3.Connection, tally: PartitionTally) -> int:
            # Read what the file holds inside the write: two declarations of a new topic at
            # once are queued one after the other, and the second must find the first's.
            existing = store.load_topic(conn, config.name)
            topic_id = store.declare(conn, existing, config)
            first = existing.config.partitions if existing else 0
            for partition in range(first, config.partitions):
                tally.new_partition(topic_id, partition)
            return topic_id

        try:
            topic_id = await self._write(run, None, background=False)
        except ValueError as error:
            raise InvalidRequestError(str(error)) from None
        self._topics[config.name] = StoredTopic(topic_id, config)

    async def topics(self) -> list[TopicConfig]:
        """Every topic, in name order."""
        return [self._topics[name].config for name in sorted(self._topics)]

    async def append(self, topic: str, events: Sequence[tuple[int, NewEvent]]) -> list[Appended]:
        """Durably append; returns after the commit that holds the events has been fsynced."""
        stored = self._topic(topic)

        def run(conn: sqlite3.Connection, tally: PartitionTally) -> list[Appended]:
            return store.append(conn, stored, events, tally)

        result: list[Appended] = await self._write(run, topic, background=False)
        return result

    async def read(self, topic: str, partition: int, offset: int, limit: int) -> list[Event]:
        """Up to `limit` events of a partition from `offset` on."""
        stored = self._topic(topic)
        return await self._read(lambda conn: store.read(conn, stored, partition, offset, limit))

    async def partitions(self, topic: str) -> list[PartitionState]:
        """Bounds of each partition."""
        stored = self._topic(topic)
        return await self._read(lambda conn: store.partition_states(conn, stored))

    async def offset_for_time(self, topic: str, partition: int, time_ms: int) -> int:
        """First offset at or after `time_ms`, else the partition's end."""
        stored = self._topic(topic)
        found = await self._read(
            lambda conn: store.offset_for_time(conn, stored, partition, time_ms)
        )
        if found is not None:
            return found
        states = await self.partitions(topic)
        return states[partition].end

    async def commit(self, group: str, topic: str, offsets: Mapping[int, int]) -> None:
        """Durably record a group's next offsets."""
        stored = self._topic(topic)
        frozen = dict(offsets)

        def run(conn: sqlite3.Connection, _: PartitionTally) -> None:
            store.commit(conn, group, stored, frozen)

        await self._write(run, None, background=False)

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        """A group's committed offsets."""
        stored = self._topic(topic)
        return await self._read(lambda conn: store.committed(conn, group, stored))

    async def groups(self) -> list[tuple[str, str]]:
        """(topic, group) pairs with commits."""
        return await self._read(store.groups)

    async def maintain(self, topic: str, now_ms: int) -> Maintenance:
        """One pass of retention then compaction, in chunks that never stall publishers."""
        stored = self._topic(topic)
        config = stored.config
        expired = compacted = 0
        if config.retention_ms is not None or config.retention_bytes is not None:
            expired = await self._expire(stored, now_ms)
        if config.compaction:
            compacted = await self._compact(stored, now_ms - config.compaction_lag_ms)
        return Maintenance(topic, expired, compacted)

    async def _expire(self, stored: StoredTopic, now_ms: int) -> int:
        config = stored.config
        cutoff = None if config.retention_ms is None else now_ms - config.retention_ms
        budget = config.partition_retention_bytes
        scan, chunk = self.config.maintenance_scan, self.config.maintenance_chunk
        removed = 0
        for state in await self.partitions(config.name):
            until = await self._read(
                _bind(
                    store.expired_until,
                    stored,
                    state,
                    cutoff_ms=cutoff,
                    budget_bytes=budget,
                    scan_limit=scan,
                )
            )
            for start in range(state.start, until, chunk):
                upto = min(until, start + chunk)
                delete = _bind(store.delete_prefix, stored, state.partition, upto)
                removed += await self._write(_plain(delete), None, background=True)
        return removed

    async def _compact(self, stored: StoredTopic, cutoff_ms: int) -> int:
        scan, chunk = self.config.maintenance_scan, self.config.maintenance_chunk
        removed = 0
        for state in await self.partitions(stored.config.name):
            after: int | None = state.start
            while after is not None:
                found, after = await self._read(
                    _bind(
                        store.superseded,
                        stored,
                        state.partition,
                        after,
                        cutoff_ms=cutoff_ms,
                        scan_limit=scan,
                    )
                )
                for index in range(0, len(found), chunk):
                    delete = _bind(store.delete_positions, stored, found[index : index + chunk])
                    removed += await self._write(_plain(delete), None, background=True)
        return removed

    def _topic(self, name: str) -> StoredTopic:
        try:
            return self._topics[name]
        except KeyError:
            raise UnknownTopicError(name) from None

    async def _write(
        self,
        run: Callable[[sqlite3.Connection, PartitionTally], T],
        topic: str | None,
        *,
        background: bool,
    ) -> T:
        assert self._writer is not None and self._room is not None, "log is not open"
        room = self._room
        if room.locked():
            try:
                await asyncio.wait_for(room.acquire(), self.config.queue_timeout_s)
            except TimeoutError:
                raise OverloadedError("the log's write queue is full; retry later") from None
        else:
            await room.acquire()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        # The slot is held until the job is done, even if this caller stops waiting for it.
        future.add_done_callback(lambda _: room.release())
        self._writer.submit(_Job(run, future, topic), background=background)
        return await asyncio.shield(future)

    async def _read(self, run: Callable[[sqlite3.Connection], T]) -> T:
        assert self._readers is not None, "log is not open"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: run(self._reader()))

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = store.connect(self.config.path, self.config.synchronous, writer=False)
            self._local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn


def _bind(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Callable[[sqlite3.Connection], T]:
    """`fn(conn, *args, **kwargs)` for a connection given later, with the arguments fixed now."""
    return lambda conn: fn(conn, *args, **kwargs)


def _plain(
    run: Callable[[sqlite3.Connection], T],
) -> Callable[[sqlite3.Connection, PartitionTally], T]:
    """A write job that does not move any partition's next offset."""
    return lambda conn, _tally: run(conn)
