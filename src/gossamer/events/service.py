"""One broker process's parts, wired together: log, broker, history and SQL engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gossamer.events.broker import Broker, BrokerSettings
from gossamer.events.history import History, HistorySettings
from gossamer.events.log import EventLog
from gossamer.events.sql import QueryEngine, QueryResult, QuerySettings
from gossamer.events.sqlite_log import SqliteLog, SqliteLogConfig
from gossamer.events.sqlite_store import Synchronous
from gossamer.events.topics import TopicConfig
from gossamer.resources import load_paths
from gossamer.resources.kinds.gossamer_kinds import Topic
from gossamer.resources.problems import Severity

Backend = Literal["sqlite", "jetstream"]


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Everything `gossamer events serve` is told, parsed once."""

    data_dir: Path
    backend: Backend = "sqlite"
    nats_url: str = "nats://127.0.0.1:4222"
    nats_prefix: str = "gossamer"
    synchronous: Synchronous = "FULL"
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    history: HistorySettings = field(default_factory=HistorySettings)
    query: QuerySettings = field(default_factory=QuerySettings)


class ManifestError(Exception):
    """Topic manifests that do not validate; each problem is one `FILE:LINE: message` line."""


def load_topics(paths: Sequence[Path]) -> list[TopicConfig]:
    """Topic configurations from manifest files and folders (other kinds are ignored)."""
    if not paths:
        return []
    loaded = load_paths(paths)
    errors = [str(p) for p in loaded.problems if p.severity is Severity.ERROR]
    if errors:
        raise ManifestError("\n".join(errors))
    topics: dict[str, TopicConfig] = {}
    for item in loaded.resources:
        if isinstance(item.resource, Topic):
            if item.name in topics:
                raise ManifestError(f"{item.where}: Topic {item.name} is declared twice")
            topics[item.name] = TopicConfig.from_resource(item.resource)
    return list(topics.values())


def open_log(config: ServiceConfig) -> EventLog:
    """The log backend the configuration names."""
    if config.backend == "jetstream":
        # Imported only when used: an embedded broker never loads the NATS client.
        from gossamer.events.jetstream_log import JetStreamLog, JetStreamLogConfig  # noqa: PLC0415

        return JetStreamLog(JetStreamLogConfig(config.nats_url, prefix=config.nats_prefix))
    return SqliteLog(SqliteLogConfig(config.data_dir, synchronous=config.synchronous))


class BrokerService:
    """The broker with its history and SQL engine; started and stopped as one."""

    def __init__(self, config: ServiceConfig, event_log: EventLog | None = None) -> None:
        self.config = config
        self.broker = Broker(event_log or open_log(config), config.broker)
        self.history = History(config.data_dir / "history", self.broker.log, config.history)
        self.sql = QueryEngine(self.history, config.query)
        self.closing = False

    def __repr__(self) -> str:
        return f"<BrokerService {self.broker!r} {self.history!r}>"

    async def start(self, declared: Sequence[TopicConfig] = ()) -> None:
        """Open the log, declare topics, start background work."""
        await self.broker.start(declared)
        self.history.open()
        self.history.start()

    def begin_shutdown(self) -> None:
        """End every open stream (members and tails) so connections can close promptly."""
        self.closing = True
        self.broker.groups.end_sessions("the broker is shutting down")

    async def stop(self) -> None:
        """Stop background work, end streams, close the log."""
        await self.history.stop()
        await self.broker.stop()

    async def query(self, sql: str, topic: str | None = None) -> QueryResult:
        """Run SQL over every topic, or over one topic only (the other tables do not exist)."""
        names = [topic] if topic is not None else self.broker.topic_names()
        configs = [self.broker.topic(name).config for name in names]
        return await self.sql.run(sql, configs)
