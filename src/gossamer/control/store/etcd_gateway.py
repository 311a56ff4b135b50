"""A small client of etcd v3's JSON gateway: range, txn, compaction and watch streams over httpx.

The gateway speaks the gRPC API as JSON over HTTP/1.1: keys and values are base64, 64-bit
integers are strings, fields at their default (false, 0, PUT) are left out, and a watch is one
POST whose response streams one JSON message per line.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from gossamer.control.store.errors import StoreUnavailableError

Json = dict[str, Any]

COMPACTED_CODE = 11
"""gRPC OUT_OF_RANGE: etcd's answer to a read or watch at a compacted revision."""


class CompactedError(StoreUnavailableError):
    """etcd refused a revision because history before `revision` was compacted."""


@dataclass(frozen=True, slots=True)
class EtcdSettings:
    """Where etcd is and how long to wait for it."""

    endpoint: str
    """http://HOST:PORT of one etcd member's client URL."""
    prefix: str = "/gossamer/"
    """Every key this store writes starts with this."""
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 10.0
    watch_idle_s: float = 660.0
    """A watch stream silent this long is dead: etcd sends progress every 10 minutes by default."""
    max_requests: int = 64
    """Connections for reads and writes; more concurrent calls queue for up to connect_timeout_s."""
    max_watches: int = 512
    """Open watch streams (one connection each); one more fails fast as unavailable."""
    compact: bool = True
    """Compact etcd's history (it is cluster-wide): turn off when etcd is shared with others
    and compacted by its own --auto-compaction settings instead."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd returns it."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyValue:
        """Decode the gateway's form (base64 bytes, string integers, defaults left out)."""
        return cls(
            unb64(data.get("key", "")),
            unb64(data.get("value", "")),
            int(data.get("create_revision", 0)),
            int(data.get("mod_revision", 0)),
        )


def b64(data: bytes) -> str:
    """Bytes as the gateway wants them."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Bytes from the gateway's base64."""
    return base64.b64decode(text)


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with `prefix`."""
    trimmed = prefix.rstrip(b"\xff")
    assert trimmed, "a prefix of only 0xff bytes has no end"
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


class EtcdGateway:
    """Calls to one etcd member: unary calls on one pool, watch streams on another."""

    def __init__(self, settings: EtcdSettings) -> None:
        self.settings = settings
        connect = settings.connect_timeout_s
        self._calls = httpx.AsyncClient(
            base_url=settings.endpoint,
            timeout=httpx.Timeout(settings.request_timeout_s, connect=connect, pool=connect),
            limits=httpx.Limits(max_connections=settings.max_requests),
        )
        self._watches = httpx.AsyncClient(
            base_url=settings.endpoint,
            # A short pool timeout: past max_watches a watch fails soon instead of queueing.
            timeout=httpx.Timeout(settings.watch_idle_s, connect=connect, pool=1.0),
            limits=httpx.Limits(max_connections=settings.max_watches),
        )
        self._closed = False

    def __repr__(self) -> str:
        return f"<EtcdGateway {self.settings.endpoint} prefix={self.settings.prefix!r}>"

    async def call(self, method: str, body: Json) -> Json:
        """POST /v3/{method}; etcd's errors become StoreUnavailableError (or CompactedError)."""
        self._check_open()
        try:
            response = await self._calls.post(f"/v3/{method}", json=body)
        except httpx.HTTPError as error:
            raise self._unavailable(error) from error
        data = _json(response.content)
        if response.status_code != 200:
            raise _error(self.settings.endpoint, data, response.status_code)
        return data

    async def range(
        self, key: bytes, end: bytes | None = None, *, revision: int = 0, limit: int = 0
    ) -> tuple[list[KeyValue], int, bool]:
        """(keys, the revision read at, whether more keys follow)."""
        body: Json = {"key": b64(key)}
        if end is not None:
            body["range_end"] = b64(end)
        if revision:
            body["revision"] = str(revision)
        if limit:
            body["limit"] = str(limit)
        data = await self.call("kv/range", body)
        kvs = [KeyValue.from_json(item) for item in data.get("kvs", [])]
        return kvs, header_revision(data), bool(data.get("more", False))

    async def txn(
        self, compare: Sequence[Json], success: Sequence[Json], failure: Sequence[Json]
    ) -> tuple[bool, list[Json], int]:
        """(whether the comparisons held, the responses of the branch taken, the revision)."""
        data = await self.call(
            "kv/txn", {"compare": list(compare), "success": list(success), "failure": list(failure)}
        )
        return bool(data.get("succeeded", False)), data.get("responses", []), header_revision(data)

    async def compact(self, revision: int) -> None:
        """Drop history before `revision`; already compacted further is not an error."""
        try:
            await self.call("kv/compaction", {"revision": str(revision)})
        except CompactedError:
            return

    async def open_watch(self, body: Json) -> httpx.Response:
        """POST /v3/watch and return the streaming response (the caller closes it)."""
        self._check_open()
        request = self._watches.build_request("POST", "/v3/watch", json=body)
        try:
            response = await self._watches.send(request, stream=True)
        except httpx.PoolTimeout as error:
            limit = self.settings.max_watches
            raise StoreUnavailableError(f"too many watches on etcd (at most {limit})") from error
        except httpx.HTTPError as error:
            raise self._unavailable(error) from error
        if response.status_code != 200:
            content = await response.aread()
            await response.aclose()
            raise _error(self.settings.endpoint, _json(content), response.status_code)
        return response

    async def aclose(self) -> None:
        """Close both pools."""
        self._closed = True
        await self._calls.aclose()
        await self._watches.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailableError(f"etcd client for {self.settings.endpoint} is closed")

    def _unavailable(self, error: httpx.HTTPError) -> StoreUnavailableError:
        return StoreUnavailableError(f"etcd at {self.settings.endpoint}: {error!r}")


def header_revision(data: Mapping[str, Any]) -> int:
    """The store revision a response was produced at."""
    return int(data.get("header", {}).get("revision", 0))


def _json(content: bytes) -> Json:
    try:
        data = json.loads(content)
    except ValueError:
        return {"message": content[:200].decode("utf-8", "replace")}
    return data if isinstance(data, dict) else {"message": str(data)}


def _error(endpoint: str, data: Mapping[str, Any], status: int) -> StoreUnavailableError:
    message = str(data.get("message") or data.get("error") or f"HTTP {status}")
    if data.get("code") == COMPACTED_CODE:
        return CompactedError(f"etcd at {endpoint}: {message}")
    return StoreUnavailableError(f"etcd at {endpoint}: {message}")
