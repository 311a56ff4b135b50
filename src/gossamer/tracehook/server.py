"""Servers: each request's trace headers become the context it is handled in.

Covered: the standard library's http.server (its BaseHTTPRequestHandler, and so
ThreadingHTTPServer, wsgiref and Werkzeug's development server, which build on it) and ASGI apps
run by uvicorn. Each request is handled in a thread or an asyncio task of its own, where a
ContextVar set when the request arrives is that request's alone.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, MutableMapping
from types import ModuleType
from typing import Any

from gossamer.tracehook import context
from gossamer.tracehook.patching import Patcher

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def patch_http_server(module: ModuleType, patcher: Patcher) -> None:
    """BaseHTTPRequestHandler: the context is set once the request head is parsed, and each
    request of a kept-alive connection is handled in a context of its own."""
    handler = module.BaseHTTPRequestHandler
    patcher.wrap(handler, "parse_request", _parse_request)
    patcher.wrap(handler, "handle_one_request", _in_own_context)


def patch_wsgiref(module: ModuleType, patcher: Patcher) -> None:
    """wsgiref's handler reads its one request in `handle`, not `handle_one_request`."""
    patcher.wrap(module.WSGIRequestHandler, "handle", _in_own_context)


def patch_uvicorn(module: ModuleType, patcher: Patcher) -> None:
    """uvicorn's Config.load: the loaded app, with its middlewares, is wrapped once more."""

    def wrap_load(load: Callable[[Any], None]) -> Callable[[Any], None]:
        def traced_load(config: Any) -> None:
            load(config)
            config.loaded_app = traced_asgi(config.loaded_app)

        return traced_load

    patcher.wrap(module.Config, "load", wrap_load)


def traced_asgi(app: ASGIApp) -> ASGIApp:
    """An ASGI app that handles each HTTP or WebSocket request under its trace headers.

    The context is not reset afterwards: an ASGI server runs each request in a task of its own,
    whose context ends with it."""

    async def traced(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            context.handle(context.from_asgi(scope["headers"]))
        await app(scope, receive, send)

    return traced


def _parse_request(parse: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def traced_parse_request(handler: Any) -> bool:
        parsed = parse(handler)
        if parsed:
            context.handle(context.from_message(handler.headers))
        return parsed

    return traced_parse_request


def _in_own_context(handle: Callable[[Any], None]) -> Callable[[Any], None]:
    def handle_in_own_context(handler: Any) -> None:
        contextvars.copy_context().run(handle, handler)

    return handle_in_own_context
