"""The store's interface: keys, stored objects, watch events, and the `Store` protocol itself.

Every write gets a store-wide revision that only grows; an object's resourceVersion is the
revision of its last write, and a deletion has a revision of its own. A watch from version N
delivers every change with a revision above N, in order, each once. History is kept for at
least `StoreSettings.history` revisions back; a watch from further back fails with `ExpiredError`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, Self

from gossamer.control.store.selectors import LabelSelector

Body = Mapping[str, Any]
"""A resource as JSON data: apiVersion, kind, metadata, spec. Read-only once stored."""


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Bounds every store implementation honours."""

    history: int = 10_000
    """A watch can resume from any version at most this many revisions behind the newest."""
    compact_every: int = 500
    """History is trimmed in steps of this many revisions, so up to history + this are kept."""
    page_size: int = 500
    """Rows or keys read per round trip when listing or replaying history."""

    def __post_init__(self) -> None:
        if self.history < 1 or self.compact_every < 1 or self.page_size < 1:
            raise ValueError("history, compact_every and page_size must be positive")


@dataclass(frozen=True, slots=True, order=True)
class ResourceType:
    """What objects are stored under: an API group (empty for core) and a plural resource name."""

    group: str
    plural: str

    @property
    def path(self) -> str:
        """`networking.istio.io/virtualservices`; the core group is written `core`."""
        return f"{self.group or 'core'}/{self.plural}"

    @classmethod
    def from_path(cls, path: str) -> ResourceType:
        """The inverse of `path`."""
        group, _, plural = path.partition("/")
        return cls("" if group == "core" else group, plural)

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True, slots=True, order=True)
class ObjectKey:
    """One object's identity: its type, namespace and name."""

    type: ResourceType
    namespace: str
    name: str

    def __post_init__(self) -> None:
        # Names and namespaces are DNS names (validated at the API); a slash would break keys.
        assert "/" not in self.namespace and "/" not in self.name, self

    def __str__(self) -> str:
        return f"{self.type.path} {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object as stored: its key, its resourceVersion, and its body (which carries it too)."""

    key: ObjectKey
    version: int
    body: Body

    @property
    def labels(self) -> Mapping[str, str]:
        """metadata.labels, empty when absent."""
        labels = self.body.get("metadata", {}).get("labels")
        return labels if isinstance(labels, dict) else {}


class EventType(StrEnum):
    """What happened to an object, as Kubernetes watch events name it."""

    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change. For DELETED, `object` is the last state with the deletion's revision."""

    type: EventType
    object: StoredObject

    @property
    def revision(self) -> int:
        """The revision of the write that made this event."""
        return self.object.version


@dataclass(frozen=True, slots=True)
class Listing:
    """The objects a list found, and the revision they were read at (to watch from)."""

    items: tuple[StoredObject, ...]
    revision: int


@dataclass(frozen=True, slots=True)
class Scope:
    """Which objects a list or watch covers: a type (None: all), a namespace (None: all), labels."""

    type: ResourceType | None = None
    namespace: str | None = None
    labels: LabelSelector = field(default_factory=LabelSelector)

    def __post_init__(self) -> None:
        assert self.type is not None or self.namespace is None, "a namespace needs a type"

    def matches(self, stored: StoredObject) -> bool:
        """Whether an object is in scope (by its type, namespace and labels)."""
        key = stored.key
        if self.type is not None and key.type != self.type:
            return False
        if self.namespace is not None and key.namespace != self.namespace:
            return False
        return self.labels.matches(stored.labels)


class Watch(Protocol):
    """An open watch: iterate for events; `aclose` (or leaving `async with`) ends it."""

    def __aiter__(self) -> AsyncIterator[WatchEvent]: ...

    async def __anext__(self) -> WatchEvent: ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


class Store(Protocol):
    """Objects by key with optimistic concurrency, lists by scope, and resumable watches."""

    async def get(self, key: ObjectKey) -> StoredObject:
        """The object, or NotFoundError."""
        ...

    async def list(self, scope: Scope) -> Listing:
        """Every object in scope, ordered by type, namespace and name, and the revision read at."""
        ...

    async def create(self, key: ObjectKey, body: Body) -> StoredObject:
        """Store a new object; AlreadyExistsError if the key is taken."""
        ...

    async def replace(
        self, key: ObjectKey, body: Body, expected_version: int | None = None
    ) -> StoredObject:
        """Overwrite an object; NotFoundError, or ConflictError at another version."""
        ...

    async def delete(self, key: ObjectKey, expected_version: int | None = None) -> StoredObject:
        """Remove an object and return its last state at the deletion's revision."""
        ...

    async def watch(self, scope: Scope, from_version: int) -> Watch:
        """Changes in scope with a revision above `from_version`; ExpiredError if too old."""
        ...

    async def close(self) -> None:
        """Release connections and end open watches."""
        ...


def encode(body: Body) -> str:
    """The stored form of a body: compact JSON without metadata.resourceVersion."""
    metadata = dict(body.get("metadata") or {})
    metadata.pop("resourceVersion", None)
    return json.dumps({**body, "metadata": metadata}, separators=(",", ":"), ensure_ascii=False)


def decode(text: str | bytes, version: int) -> dict[str, Any]:
    """A stored body with metadata.resourceVersion set to `version` (a string, as in Kubernetes)."""
    body: dict[str, Any] = json.loads(text)
    body.setdefault("metadata", {})["resourceVersion"] = str(version)
    return body
