"""Errors as the API returns them: Kubernetes `Status` bodies, and the one map from store errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from gossamer.control.store.errors import (
    AlreadyExistsError,
    ConflictError,
    ExpiredError,
    NotFoundError,
    StoreError,
)
from gossamer.control.store.model import ObjectKey


class ApiError(Exception):
    """A request that fails with an HTTP status, a Kubernetes reason and a message for people."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The `Status` object."""
        return status_body(self.code, self.reason, self.message, self.details)

    def response(self) -> JSONResponse:
        """The error as an HTTP response."""
        return JSONResponse(self.body(), self.code, headers=self.headers)


def status_body(
    code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A failed `Status`, as Kubernetes writes it."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = dict(details)
    return body


def bad_request(message: str) -> ApiError:
    """400: the request itself is malformed."""
    return ApiError(400, "BadRequest", message)


def from_store(error: StoreError) -> ApiError:
    """The one place where store errors become HTTP statuses."""
    match error:
        case NotFoundError(key=key):
            return ApiError(404, "NotFound", f"{_named(key)} not found", _details(key))
        case AlreadyExistsError(key=key):
            return ApiError(409, "AlreadyExists", f"{_named(key)} already exists", _details(key))
        case ConflictError(key=key):
            message = (
                f"Operation cannot be fulfilled on {_named(key)}: the object has been modified "
                f"(resourceVersion {error.actual}, not {error.expected}); "
                "read it again and apply your changes to the latest version"
            )
            return ApiError(409, "Conflict", message, _details(key))
        case ExpiredError():
            return ApiError(410, "Expired", str(error))
    return ApiError(503, "ServiceUnavailable", f"the store is unavailable: {error}")


def _named(key: ObjectKey) -> str:
    group = f".{key.type.group}" if key.type.group else ""
    return f'{key.type.plural}{group} "{key.name}"'


def _details(key: ObjectKey) -> dict[str, str]:
    return {"name": key.name, "group": key.type.group, "kind": key.type.plural}
