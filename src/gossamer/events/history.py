"""The columnar copy of topic history that SQL reads: Parquet segments sealed from the log.

Each partition's history is a run of immutable Parquet files, each covering a range of offsets
(`FIRST-LAST-COUNT.parquet`). A segment holds each payload twice: as its JSON text (`payload`,
exactly as published) and as a VARIANT (`data`) that Parquet stores shredded, one typed column
per field, so that an aggregate over a field reads that column instead of parsing every
payload. The log stays the source of truth: a segment is written from it, to a temporary name,
then renamed into place, so a crash leaves either the whole segment or none. A query first
seals every partition's tail, so it sees every event acknowledged before it started; small
segments are merged in the background, and segments wholly below a partition's start
(retention) are deleted. Files a running query reads are pinned and deleted only after.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from gossamer.events.errors import EventsError
from gossamer.events.log import EventLog
from gossamer.events.model import Event
from gossamer.events.periodic import Periodic
from gossamer.events.topics import TopicConfig

log = logging.getLogger(__name__)

COLUMNS = {
    "offset": "BIGINT",
    "partition": "INTEGER",
    "id": "VARCHAR",
    "key": "VARCHAR",
    "type": "VARCHAR",
    "time": "BIGINT",
    "headers": "JSON",
    "payload": "JSON",
}
"""Columns of the NDJSON a segment is written from; `time` becomes a TIMESTAMPTZ in Parquet."""

LAYOUT = "2"
"""Version of the segment files' columns, kept in `LAYOUT_FILE`; 2 added `data`."""
LAYOUT_FILE = "layout.txt"


@dataclass(frozen=True, slots=True)
class HistorySettings:
    """When tails are sealed and segments merged."""

    seal_events: int = 100_000
    seal_age_s: float = 30.0
    merge_segments: int = 8
    merge_target_events: int = 2_000_000
    read_batch: int = 5000
    period_s: float = 1.0


@dataclass(frozen=True, slots=True, order=True)
class Segment:
    """One Parquet file of a partition's history: offsets `first` to `last`, `count` events."""

    first: int
    last: int
    count: int
    path: Path

    @classmethod
    def parse(cls, path: Path) -> Segment | None:
        """The segment a file name describes, or None for a file that is not one."""
        try:
            first, last, count = (int(part) for part in path.stem.split("-"))
        except ValueError:
            return None
        return cls(first, last, count, path)

    @staticmethod
    def name(first: int, last: int, count: int) -> str:
        """File name of a segment; zero-padded so that names sort by offset."""
        return f"{first:020d}-{last:020d}-{count}.parquet"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one query reads: each topic's segment files and each partition's first live offset."""

    files: dict[str, list[Path]]
    starts: dict[str, dict[int, int]]
    topics: dict[str, TopicConfig]


class History:
    """Keeps Parquet segments of every topic in step with the log."""

    def __init__(self, root: Path, event_log: EventLog, settings: HistorySettings) -> None:
        self.root = root
        self.settings = settings
        self._log = event_log
        self._segments: dict[tuple[str, int], list[Segment]] = {}
        self._sealed_until: dict[tuple[str, int], int] = {}
        self._sealed_at: dict[tuple[str, int], float] = {}
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._pins: Counter[Path] = Counter()
        self._doomed: set[Path] = set()
        self._periodic = Periodic("history", settings.period_s, self._maintain_all)

    def __repr__(self) -> str:
        files = sum(len(s) for s in self._segments.values())
        return f"<History {self.root}: {files} segments, {len(self._pins)} pinned>"

    def open(self) -> None:
        """Read the segments on disk; drop temporary files, segments of another layout and
        segments another one covers."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._drop_other_layouts()
        for stale in self.root.rglob("*.tmp*"):
            stale.unlink()
        for folder in sorted(p for p in self.root.glob("*/*") if p.is_dir()):
            key = (folder.parent.name, int(folder.name))
            found = sorted(s for p in folder.glob("*.parquet") if (s := Segment.parse(p)))
            kept: list[Segment] = []
            for segment in found:
                if kept and segment.first <= kept[-1].last:
                    # A merge renamed its output but crashed before deleting its inputs.
                    wider = segment if segment.last >= kept[-1].last else kept[-1]
                    narrow = kept[-1] if wider is segment else segment
                    narrow.path.unlink()
                    if wider is segment:
                        kept[-1] = segment
                    continue
                kept.append(segment)
            self._segments[key] = kept
            if kept:
                self._sealed_until[key] = kept[-1].last + 1

    def _drop_other_layouts(self) -> None:
        """Delete segments written with other columns; they are sealed again from the log.

        Segments are only a copy of the log, and queries filter what retention and compaction
        removed from it, so sealing the log again gives the same tables.
        """
        marker = self.root / LAYOUT_FILE
        if marker.exists() and marker.read_text().strip() == LAYOUT:
            return
        folders = [p for p in self.root.iterdir() if p.is_dir()]
        if folders:
            log.info("history: segments of another layout dropped, to be sealed again")
        for folder in folders:
            shutil.rmtree(folder)
        draft = marker.with_name(marker.name + ".tmp")
        draft.write_text(LAYOUT + "\n")
        draft.replace(marker)

    def start(self) -> None:
        """Seal and merge in the background."""
        self._periodic.start()

    async def stop(self) -> None:
        """Stop background work (a seal in progress finishes or leaves only a temporary file)."""
        await self._periodic.stop()

    def segments(self, topic: str, partition: int) -> list[Segment]:
        """A partition's segments, oldest first."""
        return list(self._segments.get((topic, partition), ()))

    async def snapshot(self, topics: Sequence[TopicConfig]) -> Snapshot:
        """Seal every tail of these topics and pin their files for one query."""
        files: dict[str, list[Path]] = {}
        starts: dict[str, dict[int, int]] = {}
        for config in topics:
            states = await self._log.partitions(config.name)
            starts[config.name] = {s.partition: s.start for s in states}
            paths: list[Path] = []
            for state in states:
                await self.seal(config.name, state.partition)
                # Pinned at once: a merge may replace these files at the next await.
                found = [s.path for s in self._segments.get((config.name, state.partition), ())]
                self._pins.update(found)
                paths.extend(found)
            files[config.name] = paths
        return Snapshot(files, starts, {c.name: c for c in topics})

    def release(self, snapshot: Snapshot) -> None:
        """Unpin a query's files; delete those that became obsolete while it ran."""
        for paths in snapshot.files.values():
            for path in paths:
                self._pins[path] -= 1
                if self._pins[path] <= 0:
                    del self._pins[path]
                    if path in self._doomed:
                        self._doomed.discard(path)
                        path.unlink(missing_ok=True)

    async def seal(self, topic: str, partition: int) -> Segment | None:
        """Write the partition's events not yet in a segment into a new one."""
        key = (topic, partition)
        async with self._locks.setdefault(key, asyncio.Lock()):
            states = await self._log.partitions(topic)
            state = states[partition]
            first = max(self._sealed_until.get(key, 0), state.start)
            if first >= state.end:
                return None
            folder = self.root / topic / str(partition)
            folder.mkdir(parents=True, exist_ok=True)
            draft = folder / f"{first:020d}.tmp.ndjson"
            count = 0
            with draft.open("w", encoding="utf-8") as out:
                async for events in _batches(
                    self._log, topic, partition, first, state.end, batch=self.settings.read_batch
                ):
                    out.writelines(_line(event) for event in events)
                    count += len(events)
            segment = None
            if count:
                path = folder / Segment.name(first, state.end - 1, count)
                await asyncio.to_thread(_write_parquet, [draft], path, json_input=True)
                segment = Segment(first, state.end - 1, count, path)
                self._segments.setdefault(key, []).append(segment)
            draft.unlink()
            self._sealed_until[key] = state.end
            self._sealed_at[key] = time.monotonic()
            return segment

    async def maintain(self, topic: TopicConfig) -> None:
        """Seal old or large tails, drop expired segments, merge small ones, for one topic."""
        states = await self._log.partitions(topic.name)
        now = time.monotonic()
        for state in states:
            key = (topic.name, state.partition)
            tail = state.end - max(self._sealed_until.get(key, 0), state.start)
            age = now - self._sealed_at.setdefault(key, now)
            if tail >= self.settings.seal_events or (tail > 0 and age >= self.settings.seal_age_s):
                await self.seal(topic.name, state.partition)
            self._drop_expired(key, state.start)
            await self._merge(key)

    def _drop_expired(self, key: tuple[str, int], start: int) -> None:
        segments = self._segments.get(key, [])
        expired = [s for s in segments if s.last < start]
        if expired:
            self._segments[key] = [s for s in segments if s.last >= start]
            for segment in expired:
                self._discard(segment.path)

    async def _merge(self, key: tuple[str, int]) -> None:
        async with self._locks.setdefault(key, asyncio.Lock()):
            small = [
                s
                for s in self._segments.get(key, [])
                if s.count < self.settings.merge_target_events
            ]
            if len(small) < self.settings.merge_segments:
                return
            run = _first_run(self._segments[key], small)
            if len(run) < 2:
                return
            count = sum(s.count for s in run)
            path = run[0].path.with_name(Segment.name(run[0].first, run[-1].last, count))
            await asyncio.to_thread(_write_parquet, [s.path for s in run], path, json_input=False)
            merged = Segment(run[0].first, run[-1].last, count, path)
            gone = set(run)
            self._segments[key] = sorted(
                [s for s in self._segments[key] if s not in gone] + [merged]
            )
            for segment in run:
                self._discard(segment.path)

    def _discard(self, path: Path) -> None:
        if self._pins[path] > 0:
            self._doomed.add(path)
        else:
            self._pins.pop(path, None)
            path.unlink(missing_ok=True)

    async def _maintain_all(self) -> None:
        for config in await self._log.topics():
            try:
                await self.maintain(config)
            except (OSError, duckdb.Error, EventsError) as error:
                log.warning("history of %s: %s", config.name, error)


async def _batches(
    event_log: EventLog, topic: str, partition: int, first: int, end: int, *, batch: int
) -> AsyncIterator[list[Event]]:
    """Events of one partition from `first` to `end`, read from the log in bounded batches."""
    position = first
    while position < end:
        events = await event_log.read(topic, partition, position, batch)
        events = [e for e in events if e.offset < end]
        if not events:
            return
        yield events
        position = events[-1].offset + 1


def _first_run(segments: list[Segment], small: list[Segment]) -> list[Segment]:
    """The oldest run of adjacent small segments."""
    smalls = set(small)
    run: list[Segment] = []
    for segment in segments:
        if segment in smalls:
            run.append(segment)
        elif len(run) >= 2:
            break
        else:
            run = []
    return run


def _line(event: Event) -> str:
    return (
        f'{{"offset":{event.offset},"partition":{event.partition},"id":{json.dumps(event.id)},'
        f'"key":{json.dumps(event.key)},"type":{json.dumps(event.type)},"time":{event.time_ms},'
        f'"headers":{event.headers_json},"payload":{event.payload_json}}}\n'
    )


def _write_parquet(sources: list[Path], target: Path, *, json_input: bool) -> None:
    """Write (NDJSON or Parquet) sources as one Parquet file, atomically."""
    draft = target.with_name(target.name + ".tmp")
    files = "[" + ", ".join(_quote(p) for p in sources) + "]"
    if json_input:
        columns = "{" + ", ".join(f"'{n}': '{t}'" for n, t in COLUMNS.items()) + "}"
        source = (
            'SELECT "offset", partition, id, key, type, epoch_ms(time)::TIMESTAMPTZ AS time, '
            "headers, payload, payload::VARIANT AS data "
            f"FROM read_json({files}, format='newline_delimited', columns={columns})"
        )
    else:
        source = f'SELECT * FROM read_parquet({files}) ORDER BY "offset"'
    with duckdb.connect(config={"threads": 1}) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute(f"COPY ({source}) TO {_quote(draft)} (FORMAT parquet)")
    draft.replace(target)


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"
