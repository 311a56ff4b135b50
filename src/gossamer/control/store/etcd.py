"""The store on etcd v3: one key per object, etcd's revision as resourceVersion, CAS by txn.

Keys are `{prefix}{group or core}/{plural}/{namespace}/{name}`; values are the object's JSON
without metadata.resourceVersion, which is the key's mod_revision when read. Writes are
transactions that compare the key's create or mod revision, so a stale write changes nothing.
Every `compact_every` revisions a write also compacts etcd's history to the newest `history`
revisions (etcd's own auto-compaction may be used instead; it only shortens resumable history).
Watches are etcd watch streams from `from_version + 1`; etcd guarantees order, no gap, no repeat.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Self

import httpx

from gossamer.control.store.errors import (
    AlreadyExistsError,
    ConflictError,
    ExpiredError,
    NotFoundError,
    StoreUnavailableError,
)
from gossamer.control.store.etcd_gateway import (
    CompactedError,
    EtcdGateway,
    EtcdSettings,
    Json,
    KeyValue,
    b64,
    prefix_end,
)
from gossamer.control.store.model import (
    Body,
    EventType,
    Listing,
    ObjectKey,
    ResourceType,
    Scope,
    StoredObject,
    StoreSettings,
    WatchEvent,
    decode,
    encode,
)

log = logging.getLogger(__name__)

MAX_REVISION = 2**63 - 1
"""etcd's revisions are int64: no change comes after this one."""


class EtcdStore:
    """A `Store` on etcd; open with `await EtcdStore.open(EtcdSettings(endpoint))`."""

    def __init__(self, gateway: EtcdGateway, settings: StoreSettings) -> None:
        self.settings = settings
        self._gateway = gateway
        self._prefix = gateway.settings.prefix.encode()
        self._compacted_below = 0
        self._watches: set[_EtcdWatch] = set()

    @classmethod
    async def open(cls, etcd: EtcdSettings, settings: StoreSettings | None = None) -> EtcdStore:
        """Connect, and check that etcd answers."""
        if not etcd.prefix.endswith("/"):
            raise ValueError(f"etcd key prefix must end with '/': {etcd.prefix!r}")
        gateway = EtcdGateway(etcd)
        try:
            await gateway.range(etcd.prefix.encode(), limit=1)
        except StoreUnavailableError:
            await gateway.aclose()
            raise
        return cls(gateway, settings or StoreSettings())

    def __repr__(self) -> str:
        return f"<EtcdStore {self._gateway.settings.endpoint} {len(self._watches)} watches>"

    @property
    def watching(self) -> int:
        """How many watches are open."""
        return len(self._watches)

    async def get(self, key: ObjectKey) -> StoredObject:
        """The object, or NotFoundError."""
        kvs, _, _ = await self._gateway.range(self._key(key))
        if not kvs:
            raise NotFoundError(key)
        return self._stored(kvs[0])

    async def list(self, scope: Scope) -> Listing:
        """Every object in scope, read page by page at one revision."""
        start = self._scope_prefix(scope)
        end = prefix_end(start)
        items: list[StoredObject] = []
        revision = 0
        while True:
            kvs, read_at, more = await self._gateway.range(
                start, end, revision=revision, limit=self.settings.page_size
            )
            revision = revision or read_at
            items.extend(s for s in map(self._stored, kvs) if scope.labels.matches(s.labels))
            if not more or not kvs:
                return Listing(tuple(items), revision)
            start = kvs[-1].key + b"\x00"

    async def create(self, key: ObjectKey, body: Body) -> StoredObject:
        """Store a new object if the key has never been created (or was deleted)."""
        raw, text = self._key(key), encode(body)
        held, _, revision = await self._gateway.txn(
            [_compare(raw, "CREATE", 0)], [_put(raw, text)], []
        )
        if not held:
            raise AlreadyExistsError(key)
        await self._maybe_compact(revision)
        return StoredObject(key, revision, decode(text, revision))

    async def replace(
        self, key: ObjectKey, body: Body, expected_version: int | None = None
    ) -> StoredObject:
        """Overwrite an object, at `expected_version` if given."""
        raw, text = self._key(key), encode(body)
        held, responses, revision = await self._gateway.txn(
            _preconditions(raw, expected_version), [_put(raw, text)], [_get(raw)]
        )
        if not held:
            raise self._failed(key, expected_version, responses)
        await self._maybe_compact(revision)
        return StoredObject(key, revision, decode(text, revision))

    async def delete(self, key: ObjectKey, expected_version: int | None = None) -> StoredObject:
        """Remove an object; returns its last state at the deletion's revision."""
        raw = self._key(key)
        removal = {"request_delete_range": {"key": b64(raw), "prev_kv": True}}
        held, responses, revision = await self._gateway.txn(
            _preconditions(raw, expected_version), [removal], [_get(raw)]
        )
        if not held:
            raise self._failed(key, expected_version, responses)
        previous = KeyValue.from_json(responses[0]["response_delete_range"]["prev_kvs"][0])
        await self._maybe_compact(revision)
        return StoredObject(key, revision, decode(previous.value, revision))

    async def watch(self, scope: Scope, from_version: int) -> _EtcdWatch:
        """An etcd watch from `from_version + 1`; ExpiredError when etcd compacted past it."""
        prefix = self._scope_prefix(scope)
        request = {
            "create_request": {
                "key": b64(prefix),
                "range_end": b64(prefix_end(prefix)),
                # From the last revision there is nothing to see; etcd refuses one beyond it.
                "start_revision": str(min(from_version + 1, MAX_REVISION)),
                "prev_kv": True,
                "progress_notify": True,
            }
        }
        if await self._compacted_past(from_version):
            raise await self._expired(scope, from_version, request)
        watch = _EtcdWatch(self, scope, from_version)
        await watch.start(request)
        self._watches.add(watch)
        return watch

    async def close(self) -> None:
        """End watches and close connections."""
        for watch in list(self._watches):
            await watch.aclose()
        await self._gateway.aclose()

    def forget(self, watch: _EtcdWatch) -> None:
        """A watch ended."""
        self._watches.discard(watch)

    @property
    def gateway(self) -> EtcdGateway:
        """The etcd client (for watches)."""
        return self._gateway

    def event(self, data: Mapping[str, Any]) -> WatchEvent:
        """A watch event from etcd's JSON (PUT is left out as the default type)."""
        kv = KeyValue.from_json(data["kv"])
        if data.get("type") == "DELETE":
            previous = KeyValue.from_json(data["prev_kv"])
            key = self._object_key(kv.key)
            stored = StoredObject(key, kv.mod_revision, decode(previous.value, kv.mod_revision))
            return WatchEvent(EventType.DELETED, stored)
        created = kv.create_revision == kv.mod_revision
        return WatchEvent(EventType.ADDED if created else EventType.MODIFIED, self._stored(kv))

    async def _compacted_past(self, version: int) -> bool:
        # etcd confirms a watch on a compacted revision and cancels it up to 100 ms later; a
        # read at that revision fails at once, so that `watch()` itself can say ExpiredError.
        _, current, _ = await self._gateway.range(self._prefix, limit=1)
        if version + 1 > current:
            return False
        try:
            await self._gateway.range(self._prefix, revision=version + 1, limit=1)
        except CompactedError:
            return True
        return False

    async def _expired(self, scope: Scope, version: int, request: Json) -> ExpiredError:
        """The error for a compacted version, with the oldest version etcd still has."""
        probe = _EtcdWatch(self, scope, version)
        try:
            async with asyncio.timeout(self._gateway.settings.request_timeout_s):
                await probe.start(request)
                await anext(probe)
        except ExpiredError as expired:
            return expired
        except (TimeoutError, StopAsyncIteration):
            pass
        finally:
            await probe.aclose()
        return ExpiredError(version, None)

    def _key(self, key: ObjectKey) -> bytes:
        return self._prefix + f"{key.type.path}/{key.namespace}/{key.name}".encode()

    def _object_key(self, raw: bytes) -> ObjectKey:
        group, plural, namespace, name = raw[len(self._prefix) :].decode().split("/")
        return ObjectKey(ResourceType.from_path(f"{group}/{plural}"), namespace, name)

    def _scope_prefix(self, scope: Scope) -> bytes:
        if scope.type is None:
            return self._prefix
        if scope.namespace is None:
            return self._prefix + f"{scope.type.path}/".encode()
        return self._prefix + f"{scope.type.path}/{scope.namespace}/".encode()

    def _stored(self, kv: KeyValue) -> StoredObject:
        return StoredObject(
            self._object_key(kv.key), kv.mod_revision, decode(kv.value, kv.mod_revision)
        )

    def _failed(self, key: ObjectKey, expected: int | None, responses: Sequence[Json]) -> Exception:
        kvs = responses[0]["response_range"].get("kvs", []) if responses else []
        if not kvs or expected is None:
            return NotFoundError(key)
        return ConflictError(key, expected, KeyValue.from_json(kvs[0]).mod_revision)

    async def _maybe_compact(self, revision: int) -> None:
        history, step = self.settings.history, self.settings.compact_every
        if not self._gateway.settings.compact or revision - self._compacted_below < history + step:
            return
        # etcd keeps revisions >= the compaction revision: versions >= revision - history resume.
        target = revision - history + 1
        try:
            await self._gateway.compact(target)
        except StoreUnavailableError as error:
            # The write itself succeeded; history is trimmed at a later write instead.
            log.warning("etcd compaction to revision %d failed: %s", target, error)
            return
        self._compacted_below = target


class _EtcdWatch:
    """One etcd watch stream, read line by line."""

    def __init__(self, store: EtcdStore, scope: Scope, from_version: int) -> None:
        self._store = store
        self._scope = scope
        self._from = from_version
        self._pending: deque[WatchEvent] = deque()
        self._response: httpx.Response | None = None
        self._lines: AsyncIterator[str] | None = None

    def __repr__(self) -> str:
        return f"<etcd watch {self._scope} from {self._from}, {len(self._pending)} pending>"

    def __aiter__(self) -> Self:
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self, request: Json) -> None:
        """Open the stream and wait for etcd to confirm (or refuse) the watch."""
        self._response = await self._store.gateway.open_watch(request)
        self._lines = self._response.aiter_lines()
        try:
            result = await self._message()
        except BaseException:
            await self.aclose()
            raise
        if not result.get("created"):
            await self.aclose()
            raise StoreUnavailableError(f"etcd did not create the watch: {result}")

    async def __anext__(self) -> WatchEvent:
        while not self._pending:
            if self._lines is None:
                raise StopAsyncIteration
            try:
                result = await self._message()
            except Exception:
                if self._lines is None:  # closed by aclose() or the store while waiting
                    raise StopAsyncIteration from None
                await self.aclose()
                raise
            for data in result.get("events", []):
                event = self._store.event(data)
                if self._scope.matches(event.object):
                    self._pending.append(event)
        return self._pending.popleft()

    async def aclose(self) -> None:
        """Close the stream (etcd cancels the watch when its connection closes)."""
        self._lines = None
        self._pending.clear()
        if self._response is not None:
            response, self._response = self._response, None
            await response.aclose()
        self._store.forget(self)

    async def _message(self) -> Json:
        assert self._lines is not None
        try:
            line = await anext(self._lines)
        except StopAsyncIteration:
            raise StoreUnavailableError("etcd ended the watch stream") from None
        except httpx.ReadTimeout:
            idle = self._store.gateway.settings.watch_idle_s
            raise StoreUnavailableError(f"etcd watch stream silent for {idle:g}s") from None
        except httpx.HTTPError as error:
            raise StoreUnavailableError(f"etcd watch stream broke: {error!r}") from error
        data = json.loads(line)
        if "error" in data:
            raise StoreUnavailableError(f"etcd watch failed: {data['error']}")
        result: Json = data.get("result", {})
        if result.get("canceled"):
            compacted = int(result.get("compact_revision", 0))
            if compacted:
                raise ExpiredError(self._from, compacted - 1)
            raise StoreUnavailableError(
                f"etcd canceled the watch: {result.get('cancel_reason', '')}"
            )
        return result


def _compare(key: bytes, target: str, revision: int) -> Json:
    field = "create_revision" if target == "CREATE" else "mod_revision"
    return {"key": b64(key), "target": target, "result": "EQUAL", field: str(revision)}


def _preconditions(key: bytes, expected: int | None) -> list[Json]:
    exists = {"key": b64(key), "target": "CREATE", "result": "GREATER", "create_revision": "0"}
    return [exists] if expected is None else [exists, _compare(key, "MOD", expected)]


def _put(key: bytes, text: str) -> Json:
    return {"request_put": {"key": b64(key), "value": b64(text.encode())}}


def _get(key: bytes) -> Json:
    return {"request_range": {"key": b64(key)}}
