"""The event backbone's exceptions: one small tree, mapped to HTTP statuses once, at the API."""

from __future__ import annotations

from dataclasses import dataclass


class EventsError(Exception):
    """Base of every error the backbone raises on purpose."""

    status = 500

    @property
    def reason(self) -> str:
        """One line a person can read, also sent as the x-gossamer-reason header."""
        return str(self)


class UnknownTopicError(EventsError):
    """The topic is not declared on this broker."""

    status = 404

    def __init__(self, topic: str) -> None:
        super().__init__(f"no topic named {topic}")
        self.topic = topic


class InvalidRequestError(EventsError):
    """The request is malformed: bad JSON, a missing field, a value out of range."""

    status = 400


class InvalidEventError(InvalidRequestError):
    """One event of a publish request is malformed; `field` says where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Violation:
    """One place where a payload breaks its topic's schema."""

    index: int
    path: str
    message: str


class SchemaViolationError(EventsError):
    """A payload does not match its topic's JSON Schema (HTTP 422)."""

    status = 422

    def __init__(self, violations: list[Violation]) -> None:
        first = violations[0]
        where = f"event {first.index}: " if first.index else ""
        super().__init__(f"{where}{first.path}: {first.message}")
        self.violations = violations


class TooLargeError(EventsError):
    """A request or batch above the configured bound (HTTP 413)."""

    status = 413


class ConflictError(EventsError):
    """The request contradicts the current state, e.g. an ack for a partition moved away."""

    status = 409


class OverloadedError(EventsError):
    """A bounded queue is full and the wait for room ran out (HTTP 503); retry later."""

    status = 503


class QueryError(EventsError):
    """An SQL query failed: a syntax error, a write, a bound exceeded."""

    status = 400


class QueryTimeoutError(QueryError):
    """An SQL query ran past its time bound (HTTP 408)."""

    status = 408
