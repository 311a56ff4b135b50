"""A synchronous client of the control plane's resource API: get, list, create, replace, delete.

```python
with ApiClient("https://127.0.0.1:15010", token, ca_file="trust-bundle.pem") as api:
    routes = api.served("networking.istio.io/v1", "VirtualService")
    for item in api.list(routes, "default", selector="app=reviews"):
        print(item["metadata"]["name"])
```
URLs come from the catalog the server is built from (`/api/v1/...` for core kinds,
`/apis/GROUP/VERSION/...` for the others). A refusal becomes `StatusError` with the `Status`
the API returned; no answer at all becomes `UnreachableError`.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import httpx

from gossamer.control.api.catalog import Catalog, ServedResource
from gossamer.security.trust import client_context, describe_failure, tls_failure

__all__ = [
    "ApiClient",
    "Object",
    "StatusError",
    "UnreachableError",
    "UntrustedServerError",
    "Written",
]

Object = dict[str, Any]
"""A resource as the API returns it: apiVersion, kind, metadata, spec."""

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class StatusError(Exception):
    """The API refused a request: the code, reason and message of the `Status` it returned."""

    def __init__(
        self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details or {})

    def __repr__(self) -> str:
        return f"<StatusError {self.code} {self.reason}: {self.message}>"


class UnreachableError(Exception):
    """The server did not answer: nothing listens at its address, or it did not reply in time."""

    def __init__(self, server: str, cause: str, timed_out: bool) -> None:
        super().__init__(f"{server}: {cause}")
        self.server = server
        self.cause = cause
        self.timed_out = timed_out


class UntrustedServerError(UnreachableError):
    """The server did not prove it is the control plane (its TLS certificate is not verified by
    the client's roots, or it speaks no TLS); no token was sent."""


@dataclass(frozen=True, slots=True)
class Written:
    """An object as the server stored it, and the warnings it sent back about the write."""

    object: Object
    warnings: tuple[str, ...] = ()


class ApiClient:
    """One server, one token; a pooled HTTP connection. Use as a context manager or `close()`."""

    def __init__(
        self,
        server: str,
        token: str | None,
        *,
        catalog: Catalog | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        ca_file: str | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.catalog = catalog or Catalog()
        self._by_kind = {(s.api_version, s.kind): s for s in self.catalog}
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # An https control plane with the mesh CA's certificate is verified with its roots.
        self.ca_file = ca_file
        verify: ssl.SSLContext = client_context(ca_file)
        self._http = httpx.Client(
            base_url=self.server,
            headers=headers,
            timeout=timeout,
            transport=transport,
            verify=verify,
        )

    def __repr__(self) -> str:
        return f"<ApiClient {self.server}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connection."""
        self._http.close()

    def served(self, api_version: str, kind: str) -> ServedResource | None:
        """The served resource of an apiVersion and kind, or None when the server has none."""
        return self._by_kind.get((api_version, kind))

    def get(self, served: ServedResource, namespace: str, name: str) -> Object:
        """One object."""
        return _object(self._request("GET", object_path(served, namespace, name)))

    def list(
        self, served: ServedResource, namespace: str | None, selector: str = ""
    ) -> list[Object]:
        """The objects in a namespace (every namespace when None), matching a label selector."""
        params = {"labelSelector": selector} if selector else None
        listing = _object(self._request("GET", collection_path(served, namespace), params=params))
        items = listing.get("items")
        return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []

    def create(self, served: ServedResource, namespace: str, body: Mapping[str, Any]) -> Written:
        """A new object; 409 AlreadyExists when its name is taken."""
        return _written(self._request("POST", collection_path(served, namespace), body=body))

    def replace(
        self, served: ServedResource, namespace: str, name: str, body: Mapping[str, Any]
    ) -> Written:
        """A new state of an object; with `metadata.resourceVersion`, 409 when that is stale."""
        path = object_path(served, namespace, name)
        return _written(self._request("PUT", path, body=body))

    def delete(self, served: ServedResource, namespace: str, name: str) -> Object:
        """Delete an object; returns its last state."""
        return _object(self._request("DELETE", object_path(served, namespace, name)))

    def proxies(self) -> tuple[dict[str, Any], ...] | None:
        """The connected proxies (`/debug/v1/proxies`), or None when the token may not see them."""
        try:
            response = self._request("GET", "/debug/v1/proxies")
        except StatusError as error:
            if error.code in (403, 404):
                return None
            raise
        items = response.json().get("items")
        return tuple(i for i in items if isinstance(i, dict)) if isinstance(items, list) else ()

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        try:
            response = self._http.request(method, path, params=params, json=body)
        except httpx.TransportError as error:
            failure = tls_failure(error)
            if failure is not None:
                cause = describe_failure(failure, self.server, self.ca_file)
                raise UntrustedServerError(self.server, cause, False) from None
            if isinstance(error, httpx.TimeoutException):
                cause = _cause(error, "no answer in time")
                raise UnreachableError(self.server, cause, True) from None
            raise UnreachableError(self.server, _cause(error, "cannot connect"), False) from None
        if response.is_error:
            raise _status_error(response)
        return response


def collection_path(served: ServedResource, namespace: str | None) -> str:
    """`/api/v1/namespaces/NS/services`, or `/api/v1/services` for every namespace."""
    if namespace is None:
        return f"{served.base_path}/{served.plural}"
    return f"{served.base_path}/namespaces/{namespace}/{served.plural}"


def object_path(served: ServedResource, namespace: str, name: str) -> str:
    """`/apis/GROUP/VERSION/namespaces/NS/PLURAL/NAME`."""
    return f"{collection_path(served, namespace)}/{name}"


def _written(response: httpx.Response) -> Written:
    warnings = tuple(_warning_text(value) for value in response.headers.get_list("warning"))
    return Written(_object(response), warnings)


def _object(response: httpx.Response) -> Object:
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        message = f"the answer to {response.request.method} {response.url.path} is not an object"
        raise StatusError(response.status_code, "InvalidResponse", message)
    return data


def _warning_text(header: str) -> str:
    """The text of a `299 - "text"` Warning header (the header itself if it is not that)."""
    code, _, rest = header.partition(" ")
    agent, _, quoted = rest.partition(" ")
    if code.isdigit() and agent and quoted.startswith('"'):
        try:
            text = json.loads(quoted)
        except ValueError:
            return header
        return text if isinstance(text, str) else header
    return header


def _status_error(response: httpx.Response) -> StatusError:
    """The `Status` in an error response; anything else (a proxy's page) by its HTTP status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        return StatusError(
            int(body.get("code") or response.status_code),
            str(body.get("reason") or response.reason_phrase),
            str(body.get("message") or response.reason_phrase),
            body.get("details") if isinstance(body.get("details"), dict) else None,
        )
    text = response.text.strip().splitlines()
    message = text[0][:200] if text else response.reason_phrase
    return StatusError(response.status_code, response.reason_phrase, message)


def _cause(error: httpx.HTTPError, fallback: str) -> str:
    text = str(error)
    # httpx wraps the socket error: "[Errno 111] Connection refused" reads better without it.
    return text.split("] ", 1)[-1].lower() if text else fallback
