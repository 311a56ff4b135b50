"""Topic configuration as the broker uses it, parsed once from a Topic resource or its spec."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gossamer.events.errors import InvalidRequestError
from gossamer.resources import load_text
from gossamer.resources.kinds.gossamer_kinds import Topic, TopicSpec
from gossamer.resources.problems import Severity

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNIT_MS = {"h": 3.6e6, "m": 6e4, "s": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "ns": 1e-6}
_TOPIC_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")


def duration_ms(text: str) -> int:
    """A Go-style duration (`1h30m`, `1.5s`, `100ms`) in whole milliseconds."""
    total = 0.0
    position = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_MS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise InvalidRequestError(f"not a duration: {text!r} (e.g. 1.5s, 100ms, 720h)")
    return round(total)


def check_topic_name(name: str) -> str:
    """Topic names are DNS labels, as Kubernetes names objects: they also appear in URL paths."""
    if not _TOPIC_NAME.match(name):
        raise InvalidRequestError(f"not a topic name: {name!r} (lowercase letters, digits and '-')")
    return name


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """A topic as the log and the broker need it; built once, trusted inside."""

    name: str
    partitions: int = 1
    retention_ms: int | None = None
    retention_bytes: int | None = None
    compaction: bool = False
    compaction_lag_ms: int = 0
    schema: Mapping[str, Any] | None = None
    dead_letter_topic: str | None = None
    max_deliveries: int | None = None
    description: str | None = None

    @property
    def partition_retention_bytes(self) -> int | None:
        """Retention by size is for the whole topic; each partition keeps its share."""
        if self.retention_bytes is None:
            return None
        return max(1, self.retention_bytes // self.partitions)

    @classmethod
    def from_resource(cls, topic: Topic) -> TopicConfig:
        """The configuration a validated Topic resource describes."""
        return cls.from_model(topic.name, topic.spec)

    @classmethod
    def from_model(cls, name: str, spec: TopicSpec) -> TopicConfig:
        """The configuration of a validated TopicSpec."""
        retention, compaction, dead = spec.retention, spec.compaction, spec.dead_letter
        return cls(
            name=name,
            partitions=spec.partitions,
            retention_ms=duration_ms(retention.time) if retention and retention.time else None,
            retention_bytes=retention.bytes if retention else None,
            compaction=bool(compaction and compaction.enabled),
            compaction_lag_ms=(
                duration_ms(compaction.min_lag) if compaction and compaction.min_lag else 0
            ),
            schema=spec.schema_,
            dead_letter_topic=dead.topic if dead else None,
            max_deliveries=dead.max_deliveries if dead else None,
            description=spec.description,
        )

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any]) -> TopicConfig:
        """Validate a Topic spec given as JSON (camelCase, as in a manifest).

        Raises InvalidRequestError naming the first wrong field, as `gossamer validate` does.
        """
        check_topic_name(name)
        document = {
            "apiVersion": "gossamer.dev/v1alpha1",
            "kind": "Topic",
            "metadata": {"name": name},
            "spec": dict(spec),
        }
        loaded = load_text(json.dumps(document), "request")
        errors = [p for p in loaded.problems if p.severity is Severity.ERROR]
        if errors:
            first = errors[0]
            where = f"{first.path}: " if first.path else ""
            raise InvalidRequestError(f"{where}{first.message}")
        resource = loaded.resources[0].resource
        assert isinstance(resource, Topic)
        return cls.from_resource(resource)

    def to_spec(self) -> dict[str, Any]:
        """The configuration as a Topic spec (camelCase), for storage and `describe`."""
        spec: dict[str, Any] = {"partitions": self.partitions}
        if self.description is not None:
            spec["description"] = self.description
        retention: dict[str, Any] = {}
        if self.retention_ms is not None:
            retention["time"] = f"{self.retention_ms}ms"
        if self.retention_bytes is not None:
            retention["bytes"] = self.retention_bytes
        if retention:
            spec["retention"] = retention
        if self.compaction:
            spec["compaction"] = {"enabled": True, "minLag": f"{self.compaction_lag_ms}ms"}
        if self.schema is not None:
            spec["schema"] = dict(self.schema)
        if self.dead_letter_topic is not None:
            spec["deadLetter"] = {
                "topic": self.dead_letter_topic,
                "maxDeliveries": self.max_deliveries,
            }
        return spec
