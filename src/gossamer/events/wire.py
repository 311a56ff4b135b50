"""The broker's JSON as the client sees it: events to publish, places stored, events received,
and the errors a broker answers with."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from gossamer.events import tracecontext
from gossamer.events.model import format_time, parse_time


class BrokerError(Exception):
    """The broker refused a request; `status` and `reason` say why."""

    def __init__(self, status: int, reason: str, body: Any = None) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason
        self.body = body


class SchemaError(BrokerError):
    """A payload broke its topic's schema (422); `violations` name each field."""

    @property
    def violations(self) -> list[dict[str, Any]]:
        """`{"index", "path", "message"}` for each violation."""
        found: list[dict[str, Any]] = (self.body or {}).get("violations", [])
        return found


class SubscriptionEnded(Exception):  # noqa: N818 - it is an end, not an error
    """The broker ended this member's session (timeout, replaced, shutdown)."""


@dataclass(frozen=True, slots=True)
class Draft:
    """An event to publish."""

    payload: Any
    key: str | None = None
    type: str | None = None
    headers: Mapping[str, str] | None = None
    id: str | None = None
    time: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """The event as the publish endpoint takes it, with trace context added."""
        body: dict[str, Any] = {
            "payload": self.payload,
            "headers": tracecontext.outgoing(self.headers),
        }
        for name in ("key", "type", "id"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        if self.time is not None:
            body["time"] = format_time(int(self.time.timestamp() * 1000))
        return body


@dataclass(frozen=True, slots=True)
class Published:
    """Where a published event was stored; `duplicate` when its id was stored before."""

    id: str
    partition: int
    offset: int
    duplicate: bool

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Published:
        """From the broker's reply."""
        return cls(data["id"], data["partition"], data["offset"], data["duplicate"])


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """An event as a consumer receives it."""

    topic: str
    partition: int
    offset: int
    id: str
    key: str | None
    type: str | None
    time_ms: int
    headers: dict[str, str]
    payload: Any
    deliveries: int = 1

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> ReceivedEvent:
        """From one line of a stream."""
        return cls(
            data["topic"],
            data["partition"],
            data["offset"],
            data["id"],
            data.get("key"),
            data.get("type"),
            parse_time(data["time"]),
            data.get("headers") or {},
            data.get("payload"),
            data.get("deliveries", 1),
        )

    @property
    def trace_context(self) -> tracecontext.TraceContext | None:
        """The publisher's trace context, if it sent one."""
        return tracecontext.TraceContext.parse(self.headers)

    @contextlib.contextmanager
    def trace(self) -> Iterator[None]:
        """Handle the event inside its publisher's trace: what you publish continues it."""
        with tracecontext.use(self.trace_context):
            yield


def raise_for(response: httpx.Response) -> None:
    """Raise BrokerError (SchemaError for a 422) when the broker refused a request."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
        reason = body.get("error", response.reason_phrase)
    except ValueError:
        body, reason = None, response.text[:200] or response.reason_phrase
    cls = SchemaError if response.status_code == 422 else BrokerError
    raise cls(response.status_code, reason, body)
