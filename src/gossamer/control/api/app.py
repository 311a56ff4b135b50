"""The control plane's ASGI app: routes, the token check in front, and errors as `Status` bodies."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from gossamer.control.api.dashboard import DashboardEndpoints, is_public
from gossamer.control.api.discovery_sd import PATH as SD_PATH
from gossamer.control.api.discovery_sd import ScrapeTargets
from gossamer.control.api.guard import BearerAuthentication
from gossamer.control.api.mesh import MeshEndpoints
from gossamer.control.api.openapi import OpenApi
from gossamer.control.api.resources import ResourceEndpoints
from gossamer.control.api.status import ApiError, from_store
from gossamer.control.api.telemetry import TelemetryEndpoints
from gossamer.control.apikeys.keys import ApiKeyEndpoints
from gossamer.control.auth import TokenRegistry
from gossamer.control.store.errors import StoreError
from gossamer.snapshot.protocol import PATH as STREAM_PATH

log = logging.getLogger(__name__)

_NAMESPACED = "/namespaces/{namespace}/{plural}"


def create_app(
    endpoints: ResourceEndpoints,
    tokens: TokenRegistry,
    mesh: MeshEndpoints | None = None,
    telemetry: TelemetryEndpoints | None = None,
    dashboard: DashboardEndpoints | None = None,
) -> Starlette:
    """The API of `endpoints` (and the mesh's routes), requiring one of `tokens` on each request."""
    openapi = OpenApi(endpoints.catalog)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi.document)

    routes: list[Route | WebSocketRoute] = [Route("/openapi.json", openapi_json, methods=["GET"])]
    if mesh is not None:
        routes += [
            WebSocketRoute(STREAM_PATH, mesh.stream),
            Route("/debug/v1/proxies", mesh.proxies, methods=["GET"]),
            Route(SD_PATH, ScrapeTargets(mesh.mesh).prometheus, methods=["GET"]),
            Route("/auth/v1/namespaces/{namespace}/workloadtokens", mesh.mint, methods=["POST"]),
            *ApiKeyEndpoints(mesh.mesh).routes(),
        ]
    if telemetry is not None:
        routes += telemetry.routes()
    if dashboard is not None:
        routes += dashboard.routes()
    for base in ("/api/{version}", "/apis/{group}/{version}"):
        routes += [
            Route(base + _NAMESPACED, endpoints.list_or_watch, methods=["GET"]),
            Route(base + _NAMESPACED, endpoints.create, methods=["POST"]),
            Route(base + _NAMESPACED + "/{name}", endpoints.get, methods=["GET"]),
            Route(base + _NAMESPACED + "/{name}", endpoints.replace, methods=["PUT"]),
            Route(base + _NAMESPACED + "/{name}", endpoints.patch, methods=["PATCH"]),
            Route(base + _NAMESPACED + "/{name}", endpoints.delete, methods=["DELETE"]),
            Route(base + "/{plural}", endpoints.list_or_watch, methods=["GET"]),
        ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(
                BearerAuthentication,
                tokens=tokens,
                public=is_public if dashboard is not None else lambda path: False,
            )
        ],
        exception_handlers={
            ApiError: _api_error,
            StoreError: _store_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )


async def _api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return error.response()


async def _store_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StoreError)
    return from_store(error).response()


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    reasons = {404: "NotFound", 405: "MethodNotAllowed"}
    reason = reasons.get(error.status_code, "BadRequest")
    message = f"{request.method} {request.url.path}: {error.detail}"
    return ApiError(error.status_code, reason, message, headers=error.headers).response()


async def _internal_error(request: Request, error: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=error)
    message = f"internal error: {type(error).__name__}; the control plane's log has details"
    return ApiError(500, "InternalError", message).response()
