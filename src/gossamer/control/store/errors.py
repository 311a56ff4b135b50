"""What a store operation can fail with; the API maps each to one HTTP status, once."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gossamer.control.store.model import ObjectKey


class StoreError(Exception):
    """Base of every store failure."""


class NotFoundError(StoreError):
    """No object under that key (404)."""

    def __init__(self, key: ObjectKey) -> None:
        super().__init__(f"{key} not found")
        self.key = key


class AlreadyExistsError(StoreError):
    """Create of a key that is taken (409 AlreadyExists)."""

    def __init__(self, key: ObjectKey) -> None:
        super().__init__(f"{key} already exists")
        self.key = key


class ConflictError(StoreError):
    """A write expected one resourceVersion and the object has another (409 ConflictError)."""

    def __init__(self, key: ObjectKey, expected: int, actual: int) -> None:
        super().__init__(
            f"{key} has resourceVersion {actual}, not {expected}: it changed since it was read; "
            "read it again and reapply the change"
        )
        self.key = key
        self.expected = expected
        self.actual = actual


class ExpiredError(StoreError):
    """A watch asked to resume from a version older than the kept history (410 Gone).

    The client must list again, then watch from the list's resourceVersion.
    """

    def __init__(self, requested: int, oldest: int | None) -> None:
        kept = f"history is kept from {oldest} on" if oldest is not None else "history is trimmed"
        super().__init__(
            f"resourceVersion {requested} is too old ({kept}): "
            "list again and watch from the list's resourceVersion"
        )
        self.requested = requested
        self.oldest = oldest


class StoreUnavailableError(StoreError):
    """The backing store cannot be reached or answered with an error (503)."""
