"""Where the control plane keeps resources: one small interface, sqlite and etcd behind it."""

from gossamer.control.store.errors import (
    AlreadyExistsError,
    ConflictError,
    ExpiredError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
)
from gossamer.control.store.model import (
    EventType,
    Listing,
    ObjectKey,
    ResourceType,
    Scope,
    Store,
    StoredObject,
    StoreSettings,
    Watch,
    WatchEvent,
)
from gossamer.control.store.selectors import LabelSelector, SelectorError

__all__ = [
    "AlreadyExistsError",
    "ConflictError",
    "EventType",
    "ExpiredError",
    "LabelSelector",
    "Listing",
    "NotFoundError",
    "ObjectKey",
    "ResourceType",
    "Scope",
    "SelectorError",
    "Store",
    "StoreError",
    "StoreSettings",
    "StoreUnavailableError",
    "StoredObject",
    "Watch",
    "WatchEvent",
]
