"""The resource endpoints: list/watch, create, get, replace, merge patch and delete.

Paths are Kubernetes': `/apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}]`, core kinds
under `/api/v1/...`, and `/apis/{group}/{version}/{plural}` to list or watch every namespace.
Objects are stored per group and plural, whatever version wrote them; they are returned at the
URL's version when that version has the same schema, and as written otherwise (no conversion).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gossamer.control.api.admission import (
    Admission,
    Admitted,
    Target,
    document_of,
    parse_version,
    read_body,
    require_json,
)
from gossamer.control.api.catalog import Catalog, ServedResource
from gossamer.control.api.guard import authorize
from gossamer.control.api.mergepatch import MEDIA_TYPE as MERGE_PATCH
from gossamer.control.api.mergepatch import merge_patch
from gossamer.control.api.status import ApiError, bad_request
from gossamer.control.api.watchstream import WatchResponse
from gossamer.control.auth import Access, Verb
from gossamer.control.store.errors import ConflictError
from gossamer.control.store.model import Scope, Store, StoredObject, Watch
from gossamer.control.store.selectors import LabelSelector, SelectorError


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """Bounds of the API."""

    max_body_bytes: int = 1_572_864
    """Largest request body (Kubernetes' 1.5 MiB object limit, which etcd also enforces)."""
    max_body_depth: int = 100
    """Deepest nesting of objects and lists in a body: far beyond any manifest, far below what
    would exhaust the stack of the parser, the validator or the JSON encoder."""
    watch_timeout_s: float = 1800.0
    """How long a watch streams when the client gives no timeoutSeconds; then it resumes."""
    max_watch_timeout_s: float = 3600.0
    conflict_retries: int = 5
    """Updates without a resourceVersion are retried this often when a concurrent write wins."""


class ResourceEndpoints:
    """Handlers bound to one store; each resolves its target, authorizes, then acts."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        settings: ApiSettings,
        admission: Admission | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.settings = settings
        self.admission = admission or Admission()
        self._watches: set[Watch] = set()
        self._closing = False

    def __repr__(self) -> str:
        return f"<ResourceEndpoints {self.store!r} {len(self._watches)} watch streams>"

    @property
    def watch_streams(self) -> int:
        """How many watch responses are streaming."""
        return len(self._watches)

    async def end_watches(self) -> None:
        """End every watch stream and refuse new ones (503): the server is stopping."""
        self._closing = True
        for watch in list(self._watches):
            await watch.aclose()

    async def list_or_watch(self, request: Request) -> Response:
        """GET a collection: a list, or with `?watch=true` a stream of events."""
        served, namespace = self._collection(request)
        watching = _flag(request.query_params.get("watch"))
        verb = Verb.WATCH if watching else Verb.LIST
        authorize(request, Access(verb, served.group, served.plural, namespace))
        _refuse_field_selector(request)
        scope = Scope(served.type, namespace, _selector(request))
        if watching:
            return await self._watch(request, served, scope)
        listing = await self.store.list(scope)
        return JSONResponse(
            {
                "apiVersion": served.api_version,
                "kind": f"{served.kind}List",
                "metadata": {"resourceVersion": str(listing.revision)},
                "items": [self._present(served, item) for item in listing.items],
            }
        )

    async def create(self, request: Request) -> Response:
        """POST a new object to a namespaced collection."""
        served, namespace = self._collection(request)
        assert namespace is not None
        # As in Kubernetes RBAC, a create is allowed or not before its name is known.
        authorize(request, Access(Verb.CREATE, served.group, served.plural, namespace))
        target = Target(served, namespace)
        document = read_body(await self._body(request), self.settings.max_body_depth)
        admitted = self.admission.create(target, document)
        stored = await self.store.create(target.key(admitted.name), admitted.body)
        return self._respond(served, stored, admitted, status_code=201)

    async def get(self, request: Request) -> Response:
        """GET one object."""
        target = self._item(request, Verb.GET)
        stored = await self.store.get(target.key())
        return JSONResponse(self._present(target.served, stored))

    async def replace(self, request: Request) -> Response:
        """PUT a whole object; its metadata.resourceVersion, when given, must be current."""
        target = self._item(request, Verb.UPDATE)
        document = read_body(await self._body(request), self.settings.max_body_depth)

        def admit(current: StoredObject) -> Admitted:
            return self.admission.update(target, document, current)

        stored, admitted = await self._update(target, admit)
        return self._respond(target.served, stored, admitted)

    async def patch(self, request: Request) -> Response:
        """PATCH with a JSON merge patch; a resourceVersion in the patch is a precondition."""
        target = self._item(request, Verb.PATCH)
        media_type = request.headers.get("content-type", "").split(";")[0].strip()
        if media_type != MERGE_PATCH:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the patch media type must be {MERGE_PATCH}, not {media_type or 'missing'}",
            )
        patch = _json_object(await self._body(request), self.settings.max_body_depth)

        def admit(current: StoredObject) -> Admitted:
            # The patch applies to the object as this URL's version reads it.
            body = self._present(target.served, current)
            # Only a resourceVersion written in the patch itself is a precondition.
            metadata = {k: v for k, v in body["metadata"].items() if k != "resourceVersion"}
            merged = merge_patch({**body, "metadata": metadata}, patch)
            return self.admission.update(target, document_of(merged), current)

        stored, admitted = await self._update(target, admit)
        return self._respond(target.served, stored, admitted)

    async def delete(self, request: Request) -> Response:
        """DELETE one object; returns its last state. DeleteOptions preconditions are honoured."""
        target = self._item(request, Verb.DELETE)
        raw = await self._body(request)
        options = _json_object(raw, self.settings.max_body_depth) if raw.strip() else {}
        expected = _precondition(options.get("preconditions"))
        stored = await self.store.delete(target.key(), expected)
        return JSONResponse(self._present(target.served, stored))

    async def _watch(self, request: Request, served: ServedResource, scope: Scope) -> Response:
        version = request.query_params.get("resourceVersion", "")
        timeout = self._watch_timeout(request.query_params.get("timeoutSeconds"))
        initial: tuple[StoredObject, ...] = ()
        if version in ("", "0"):
            # No version: the current objects as ADDED events first, then changes after them.
            listing = await self.store.list(scope)
            initial, start = listing.items, listing.revision
        else:
            start = _version(version, "resourceVersion")
        if self._closing:
            raise ApiError(503, "ServiceUnavailable", "the control plane is stopping")
        watch = await self.store.watch(scope, start)
        self._watches.add(watch)
        return WatchResponse(
            watch,
            initial,
            lambda o: self._present(served, o),
            timeout,
            on_end=lambda: self._watches.discard(watch),
        )

    async def _update(
        self, target: Target, admit: Callable[[StoredObject], Admitted]
    ) -> tuple[StoredObject, Admitted]:
        """Read, admit, compare-and-swap; retried when the client set no precondition."""
        key = target.key()
        for attempt in range(self.settings.conflict_retries + 1):
            current = await self.store.get(key)
            admitted = admit(current)
            expected = admitted.precondition or current.version
            try:
                return await self.store.replace(key, admitted.body, expected), admitted
            except ConflictError:
                if admitted.precondition is not None or attempt == self.settings.conflict_retries:
                    raise
        raise AssertionError("unreachable")

    def _collection(self, request: Request) -> tuple[ServedResource, str | None]:
        params = request.path_params
        served = self._served(params.get("group", ""), params["version"], params["plural"])
        namespace = params.get("namespace")
        if namespace is not None:
            Target(served, namespace)  # validates the namespace
        return served, namespace

    def _item(self, request: Request, verb: Verb) -> Target:
        served, namespace = self._collection(request)
        assert namespace is not None
        target = Target(served, namespace, request.path_params["name"])
        authorize(request, Access(verb, served.group, served.plural, namespace, target.name))
        return target

    def _served(self, group: str, version: str, plural: str) -> ServedResource:
        served = self.catalog.find(group, version, plural)
        if served is None:
            where = f"{group}/{version}" if group else version
            raise ApiError(
                404, "NotFound", f"the server does not serve {plural} in {where}", {"kind": plural}
            )
        return served

    def _present(self, served: ServedResource, stored: StoredObject) -> Mapping[str, Any]:
        """The object at the URL's version when that version has the same schema."""
        body = stored.body
        written = body.get("apiVersion")
        if written == served.api_version or not isinstance(written, str):
            return body
        if self.catalog.model_of(written, str(body.get("kind"))) is served.model:
            return {**body, "apiVersion": served.api_version}
        return body

    def _respond(
        self,
        served: ServedResource,
        stored: StoredObject,
        admitted: Admitted,
        status_code: int = 200,
    ) -> Response:
        # Kubernetes' Warning header: code 299, agent "-", the text quoted.
        headers = [("Warning", f"299 - {json.dumps(w)}") for w in admitted.warnings]
        response = JSONResponse(self._present(served, stored), status_code)
        for name, value in headers:
            response.headers.append(name, value)
        return response

    def _watch_timeout(self, given: str | None) -> float:
        if not given or given == "0":
            return self.settings.watch_timeout_s
        return float(min(_version(given, "timeoutSeconds"), self.settings.max_watch_timeout_s))

    async def _body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "RequestEntityTooLarge", f"the body is larger than {limit} bytes")


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def _selector(request: Request) -> LabelSelector:
    try:
        return LabelSelector.parse(request.query_params.get("labelSelector", ""))
    except SelectorError as error:
        raise bad_request(str(error)) from None


def _refuse_field_selector(request: Request) -> None:
    if request.query_params.get("fieldSelector"):
        raise bad_request("fieldSelector is not supported; use labelSelector")


def _version(text: str, name: str) -> int:
    version = parse_version(text)
    if version is None:
        raise bad_request(f"{name} must be a non-negative integer below 2^63, not {text!r}")
    return version


def _json_object(raw: bytes, max_depth: int) -> dict[str, Any]:
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except ValueError as error:
        raise bad_request(f"the body is not valid JSON: {error}") from None
    except RecursionError:
        raise bad_request(f"the body is nested more than {max_depth} levels deep") from None
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object")
    require_json(data, max_depth)
    return data


def _refuse_constant(name: str) -> NoReturn:
    # Python reads NaN and Infinity, which JSON has not: stored, they could not be served.
    raise ValueError(f"{name} is not a JSON number")


def _precondition(preconditions: object) -> int | None:
    if preconditions is None:
        return None
    if not isinstance(preconditions, dict):
        raise bad_request("preconditions must be an object")
    given = preconditions.get("resourceVersion")
    if given is None:
        return None
    version = parse_version(given) if isinstance(given, str) else None
    if not version:
        raise bad_request(f"preconditions.resourceVersion must be a positive integer: {given!r}")
    return version
