"""Events as publishers give them and as the log returns them, and their JSON wire form."""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gossamer.events.errors import InvalidEventError

JsonValue = Any
"""A value that json.loads can return: dict, list, str, int, float, bool or None."""

_COMPACT = (",", ":")


def compact_json(value: JsonValue) -> str:
    """The one JSON text form the log stores: no spaces, UTF-8 kept as is."""
    return json.dumps(value, separators=_COMPACT, ensure_ascii=False)


def new_event_id(now_ms: int | None = None) -> str:
    """A UUIDv7: time-ordered, so ids of recent events sit together in the log's id index.

    The 74 random bits come from `random` (seeded from the OS, reseeded in forked children):
    ids must not collide, not be unguessable, and os.urandom costs 40 us a call on some VMs.
    """
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = random.getrandbits(80)
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & (2**62 - 1)
    return str(uuid.UUID(int=value))


def now_ms() -> int:
    """Wall-clock time in milliseconds since the epoch, the unit of event times."""
    return int(time.time() * 1000)


def format_time(ms: int) -> str:
    """RFC 3339 in UTC with milliseconds, as events carry their time on the wire."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> int:
    """RFC 3339 (with an offset or Z) -> milliseconds since the epoch."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidEventError("time", f"not an RFC 3339 time: {text!r}") from None
    if moment.tzinfo is None:
        raise InvalidEventError("time", f"needs a time zone (Z or +HH:MM): {text!r}")
    return int(moment.timestamp() * 1000)


def partition_for(key: str | None, event_id: str, partitions: int) -> int:
    """BLAKE2b-64 of the key's UTF-8 (of the id when there is none), big-endian, modulo the
    partition count.

    Stable across processes and languages, so every event of a key lands in one partition and
    keeps its order there; well mixed, so similar keys (k1, k2, ...) still spread evenly.
    """
    basis = key if key is not None else event_id
    digest = hashlib.blake2b(basis.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event accepted for publishing: validated, with its id and time fixed.

    Build one with `NewEvent.create`, which encodes the headers and sizes the event once.
    """

    id: str
    key: str | None
    type: str | None
    time_ms: int
    headers: Mapping[str, str]
    payload: JsonValue
    payload_json: str
    headers_json: str
    size: int
    """Bytes this event counts for against retention by size."""

    @classmethod
    def create(
        cls,
        event_id: str,
        key: str | None,
        *,
        kind: str | None,
        time_ms: int,
        headers: Mapping[str, str],
        payload: JsonValue,
        payload_json: str,
    ) -> NewEvent:
        """An event with its headers encoded and its size counted."""
        headers_json = compact_json(dict(headers))
        size = len(payload_json) + len(headers_json) + len(event_id)
        size += len(key or "") + len(kind or "")
        return cls(event_id, key, kind, time_ms, headers, payload, payload_json, headers_json, size)


@dataclass(frozen=True, slots=True)
class Event:
    """An event as stored: its place in the log (partition, offset) and its raw JSON parts.

    Payload and headers stay JSON text so that delivering an event costs no decode and re-encode.
    """

    topic: str
    partition: int
    offset: int
    id: str
    key: str | None
    type: str | None
    time_ms: int
    headers_json: str
    payload_json: str

    @property
    def payload(self) -> JsonValue:
        """The decoded payload."""
        return json.loads(self.payload_json)

    @property
    def headers(self) -> dict[str, str]:
        """The decoded headers."""
        decoded: dict[str, str] = json.loads(self.headers_json)
        return decoded

    def to_json(self, **extra: int | str) -> str:
        """The event as one JSON object (one NDJSON line without its newline)."""
        more = "".join(f",{json.dumps(name)}:{json.dumps(value)}" for name, value in extra.items())
        return (
            f'{{"topic":{json.dumps(self.topic)},"partition":{self.partition},'
            f'"offset":{self.offset},"id":{json.dumps(self.id)},"key":{json.dumps(self.key)},'
            f'"type":{json.dumps(self.type)},"time":"{format_time(self.time_ms)}",'
            f'"headers":{self.headers_json},"payload":{self.payload_json}{more}}}'
        )


@dataclass(frozen=True, slots=True)
class EventLimits:
    """Bounds on one event, checked when it is published."""

    max_payload_bytes: int = 1024 * 1024
    max_headers: int = 64
    max_header_bytes: int = 8192
    max_key_bytes: int = 1024


def new_event_from_json(data: object, limits: EventLimits, now: int) -> NewEvent:
    """Validate one event of a publish request: `{"payload": ..., "key", "type", "id", ...}`."""
    if not isinstance(data, dict):
        raise InvalidEventError("", "an event is a JSON object with at least a payload")
    unknown = sorted(set(data) - {"id", "key", "type", "time", "headers", "payload"})
    if unknown:
        raise InvalidEventError(
            unknown[0], "unknown field (fields: id, key, type, time, headers, payload)"
        )
    if "payload" not in data:
        raise InvalidEventError("payload", "required (null for a tombstone)")
    event_id = _optional_str(data, "id", 200) or new_event_id(now)
    key = _optional_str(data, "key", limits.max_key_bytes)
    kind = _optional_str(data, "type", 200)
    raw_time = data.get("time")
    if raw_time is not None and not isinstance(raw_time, str):
        raise InvalidEventError("time", "must be an RFC 3339 string")
    time_ms = now if raw_time is None else parse_time(raw_time)
    headers = _headers(data.get("headers"), limits)
    payload = data["payload"]
    payload_json = compact_json(payload)
    if len(payload_json) > limits.max_payload_bytes:
        raise InvalidEventError(
            "payload",
            f"{len(payload_json)} bytes, more than the {limits.max_payload_bytes} allowed",
        )
    return NewEvent.create(
        event_id,
        key,
        kind=kind,
        time_ms=time_ms,
        headers=headers,
        payload=payload,
        payload_json=payload_json,
    )


def _optional_str(data: dict[str, object], name: str, max_len: int) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidEventError(name, "must be a non-empty string")
    if len(value) > max_len:
        raise InvalidEventError(name, f"longer than {max_len} characters")
    return value


def _headers(value: object, limits: EventLimits) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidEventError("headers", "must be an object of strings")
    if len(value) > limits.max_headers:
        raise InvalidEventError("headers", f"more than {limits.max_headers} headers")
    total = 0
    for name, text in value.items():
        if not isinstance(text, str):
            raise InvalidEventError(f"headers.{name}", "must be a string")
        total += len(name) + len(text)
    if total > limits.max_header_bytes:
        raise InvalidEventError("headers", f"more than {limits.max_header_bytes} bytes")
    return dict(value)
