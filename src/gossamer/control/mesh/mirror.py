"""An in-memory copy of the whole store, kept current by one watch, for translation to read.

Each control-plane replica holds its own mirror, so a write through any replica (or straight
into etcd) reaches the proxies of every replica. Objects are parsed into resource models once
per version; the mirror tells its listener which keys changed, in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pydantic

from gossamer.control.api.catalog import Catalog
from gossamer.control.store import (
    EventType,
    ExpiredError,
    ObjectKey,
    ResourceType,
    Scope,
    Store,
    StoredObject,
    StoreError,
)
from gossamer.resources import Resource

log = logging.getLogger(__name__)

Listener = Callable[[frozenset[ObjectKey]], None]
"""Called with the keys that changed, once the mirror holds the change."""


class StoreMirror:
    """Every object of the store, and its resource model when the catalog serves its kind."""

    def __init__(self, store: Store, catalog: Catalog, retry_s: float = 1.0) -> None:
        self.store = store
        self.catalog = catalog
        self.retry_s = retry_s
        self.objects: dict[ObjectKey, StoredObject] = {}
        self.resources: dict[ObjectKey, Resource] = {}
        self.revision = 0
        self.synced = asyncio.Event()
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<StoreMirror {len(self.objects)} objects at {self.revision}>"

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` after every change (the first call names every object listed)."""
        self._listeners.append(listener)

    def of_type(self, resource_type: ResourceType) -> Iterable[StoredObject]:
        """The stored objects of one type."""
        return (stored for key, stored in self.objects.items() if key.type == resource_type)

    def start(self) -> None:
        """List the store, then follow its changes until `close`."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop following the store."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except ExpiredError:
                log.info("the mirror fell behind the store's history: listing again")
            except StoreError as error:
                log.warning(
                    "the mirror lost the store (%s); retrying in %.1fs", error, self.retry_s
                )
                await asyncio.sleep(self.retry_s)

    async def _follow(self) -> None:
        listing = await self.store.list(Scope())
        fresh = {stored.key: stored for stored in listing.items}
        changed = set(self.objects) ^ set(fresh)
        changed.update(key for key, stored in fresh.items() if self._differs(key, stored))
        self.objects = fresh
        self.resources = {}
        for stored in fresh.values():
            self._parse(stored)
        self.revision = listing.revision
        self._notify(changed)
        self.synced.set()
        async with await self.store.watch(Scope(), listing.revision) as watch:
            async for event in watch:
                # Listeners debounce: one notice per event is cheap, and never delays a change.
                self._take(event.type, event.object)
                self._notify((event.object.key,))
        raise StoreError("the store ended the watch")

    def _differs(self, key: ObjectKey, stored: StoredObject) -> bool:
        old = self.objects.get(key)
        return old is None or old.version != stored.version

    def _take(self, kind: EventType, stored: StoredObject) -> None:
        self.revision = max(self.revision, stored.version)
        if kind is EventType.DELETED:
            self.objects.pop(stored.key, None)
            self.resources.pop(stored.key, None)
        else:
            self.objects[stored.key] = stored
            self._parse(stored)

    def _parse(self, stored: StoredObject) -> None:
        body: Mapping[str, Any] = stored.body
        model = self.catalog.model_of(str(body.get("apiVersion", "")), str(body.get("kind", "")))
        if model is None:
            self.resources.pop(stored.key, None)
            return
        try:
            self.resources[stored.key] = model.model_validate(body)
        except pydantic.ValidationError as error:
            # Admission validated it; a model that grew stricter since must not stop the mesh.
            log.warning("%s no longer validates and is ignored: %s", stored.key, error)
            self.resources.pop(stored.key, None)

    def _notify(self, keys: Iterable[ObjectKey]) -> None:
        frozen = frozenset(keys)
        if not frozen:
            return
        for listener in self._listeners:
            listener(frozen)
