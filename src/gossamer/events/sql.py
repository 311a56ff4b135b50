"""SQL over topic history with DuckDB: one read-only SELECT, bounded in time, memory and rows.

Each query gets a fresh in-memory DuckDB whose only tables are views over the pinned segment
files, one per topic. Before the query runs, file access is narrowed to exactly those files and
the configuration is locked, so a query can neither read other files nor write any.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import json
import re
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from gossamer.events.errors import QueryError, QueryTimeoutError
from gossamer.events.history import History, Snapshot
from gossamer.events.topics import TopicConfig

_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_EMPTY = (
    'SELECT NULL::BIGINT AS "offset", NULL::INTEGER AS partition, NULL::VARCHAR AS id, '
    "NULL::VARCHAR AS key, NULL::VARCHAR AS type, NULL::TIMESTAMPTZ AS time, "
    "NULL::JSON AS headers, NULL::JSON AS payload, NULL::VARIANT AS data WHERE false"
)
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*\Z")


@dataclass(frozen=True, slots=True)
class QuerySettings:
    """Bounds of one query."""

    timeout_s: float = 30.0
    memory_limit: str = "512MB"
    threads: int = 2
    max_rows: int = 10_000
    max_sql_chars: int = 100_000


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Columns, their DuckDB types, the rows (JSON-ready values), and whether rows were cut."""

    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    truncated: bool
    elapsed_s: float

    def as_json(self) -> dict[str, Any]:
        """The result as the HTTP API returns it."""
        return {
            "columns": self.columns,
            "types": self.types,
            "rows": self.rows,
            "truncated": self.truncated,
            "elapsed_ms": round(self.elapsed_s * 1000, 3),
        }


class QueryEngine:
    """Runs SQL over the history of a broker's topics."""

    def __init__(self, history: History, settings: QuerySettings) -> None:
        self.history = history
        self.settings = settings

    async def run(self, sql: str, topics: Sequence[TopicConfig]) -> QueryResult:
        """Run one SELECT over the given topics (each a table named after it)."""
        check_read_only(sql, self.settings.max_sql_chars)
        started = time.perf_counter()
        snapshot = await self.history.snapshot(topics)
        try:
            columns, types, rows, truncated = await asyncio.to_thread(self._execute, sql, snapshot)
        finally:
            self.history.release(snapshot)
        return QueryResult(columns, types, rows, truncated, time.perf_counter() - started)

    def _execute(
        self, sql: str, snapshot: Snapshot
    ) -> tuple[list[str], list[str], list[list[Any]], bool]:
        settings = self.settings
        config: dict[str, str | bool | int | float | list[str]] = {
            "memory_limit": settings.memory_limit,
            "threads": settings.threads,
            # No spilling to disk: a query past its memory bound fails instead of filling it.
            "temp_directory": "",
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
        with duckdb.connect(config=config) as conn:
            conn.execute("SET TimeZone = 'UTC'")
            files = [path for paths in snapshot.files.values() for path in paths]
            conn.execute(f"SET allowed_paths = [{', '.join(_quote(p) for p in files)}]")
            for name, config_ in snapshot.topics.items():
                view = _view(snapshot, name, config_)
                for alias in _names(name):
                    conn.execute(f"CREATE VIEW {alias} AS {view}")
            conn.execute("SET enable_external_access = false")
            conn.execute("SET lock_configuration = true")
            timer = threading.Timer(settings.timeout_s, conn.interrupt)
            timer.start()
            try:
                cursor = conn.execute(sql)
                described = cursor.description or []
                rows = cursor.fetchmany(settings.max_rows + 1)
            except duckdb.InterruptException:
                raise QueryTimeoutError(
                    f"the query ran longer than {settings.timeout_s:g}s and was stopped"
                ) from None
            except duckdb.Error as error:
                raise QueryError(_first_line(error)) from None
            finally:
                timer.cancel()
        columns = [d[0] for d in described]
        types = [str(d[1]) for d in described]
        json_columns = {i for i, t in enumerate(types) if t == "JSON"}
        values = [
            [_plain(v, i in json_columns) for i, v in enumerate(row)]
            for row in rows[: settings.max_rows]
        ]
        return columns, types, values, len(rows) > settings.max_rows


def check_read_only(sql: str, max_chars: int) -> None:
    """Exactly one SELECT (or EXPLAIN) statement, else QueryError."""
    if len(sql) > max_chars:
        raise QueryError(f"the query is longer than {max_chars} characters")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise QueryError(_first_line(error)) from None
    if len(statements) != 1:
        raise QueryError(f"one statement per query, not {len(statements)}")
    if statements[0].type not in _ALLOWED:
        kind = statements[0].type.name
        raise QueryError(f"history is read-only: only SELECT queries run here, not {kind}")


def _view(snapshot: Snapshot, name: str, config: TopicConfig) -> str:
    files = snapshot.files.get(name, [])
    if not files:
        return _EMPTY
    source = f"SELECT * FROM read_parquet([{', '.join(_quote(p) for p in files)}])"
    starts = {p: s for p, s in snapshot.starts.get(name, {}).items() if s > 0}
    if starts:
        # Retention removed events below each partition's start; segments may still hold them.
        kept = " AND ".join(f'NOT (partition = {p} AND "offset" < {s})' for p, s in starts.items())
        source += f" WHERE {kept}"
    if config.compaction:
        # What compaction keeps, whether or not its last pass has run: every event newer than
        # the lag, and the newest event of each key.
        lag = int(config.compaction_lag_ms)
        source = (
            f"SELECT * FROM ({source}) QUALIFY key IS NULL "
            f"OR time >= now() - to_milliseconds({lag}) "
            'OR "offset" = max("offset") OVER (PARTITION BY partition, key)'
        )
    return source


def _names(topic: str) -> list[str]:
    """A topic's table name, and an unquoted alias when the name has dashes."""
    names = [f'"{topic}"']
    alias = topic.replace("-", "_")
    if alias != topic and _IDENTIFIER.match(alias):
        names.append(alias)
    return names


def _plain(value: Any, is_json: bool) -> Any:
    """A DuckDB value as plain JSON data."""
    if value is None:
        return None
    if is_json and isinstance(value, str):
        return json.loads(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.UTC)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID | bytes):
        return value.hex() if isinstance(value, bytes) else str(value)
    if isinstance(value, list | tuple):
        return [_plain(v, False) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, False) for k, v in value.items()}
    return value


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0]


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"
