"""HTTP clients: a call made while handling a request carries the request's trace headers.

Covered: http.client (and so urllib.request, and urllib3 and requests, which send through it),
httpx (Client and AsyncClient) and aiohttp's ClientSession. A header the app set itself, in any
case, is never replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from gossamer.tracehook import context
from gossamer.tracehook.patching import Patcher


def patch_http_client(module: ModuleType, patcher: Patcher) -> None:
    """HTTPConnection.endheaders: the missing trace headers are put just before the head ends.

    The headers put so far are read from the connection's buffer of header lines, so nothing is
    paid per header, and nothing at all when no trace is being handled."""

    def wrap_endheaders(endheaders: Callable[..., None]) -> Callable[..., None]:
        def traced_endheaders(
            connection: Any, message_body: Any = None, *, encode_chunked: bool = False
        ) -> None:
            forwarded = context.outgoing()
            if forwarded:
                present = {
                    line.split(b":", 1)[0].strip().lower() for line in connection._buffer[1:]
                }
                for name, value in forwarded:
                    if name.encode() not in present:
                        connection.putheader(name, value)
            endheaders(connection, message_body, encode_chunked=encode_chunked)

        return traced_endheaders

    patcher.wrap(module.HTTPConnection, "endheaders", wrap_endheaders)


def patch_httpx(module: ModuleType, patcher: Patcher) -> None:
    """httpx's Client.send and AsyncClient.send, which every request of either goes through."""

    def wrap_send(send: Callable[..., Any]) -> Callable[..., Any]:
        def traced_send(client: Any, request: Any, **options: Any) -> Any:
            _add_missing(request.headers)
            return send(client, request, **options)

        return traced_send

    def wrap_async_send(send: Callable[..., Any]) -> Callable[..., Any]:
        async def traced_send(client: Any, request: Any, **options: Any) -> Any:
            _add_missing(request.headers)
            return await send(client, request, **options)

        return traced_send

    patcher.wrap(module.Client, "send", wrap_send)
    patcher.wrap(module.AsyncClient, "send", wrap_async_send)


def patch_aiohttp(module: ModuleType, patcher: Patcher) -> None:
    """aiohttp's ClientSession._request, which get, post, request and the rest call."""

    def wrap_request(request: Callable[..., Any]) -> Callable[..., Any]:
        async def traced_request(session: Any, method: str, url: Any, **options: Any) -> Any:
            forwarded = context.outgoing()
            if forwarded:
                options["headers"] = _with_missing(
                    options.get("headers"), forwarded, session.headers
                )
            return await request(session, method, url, **options)

        return traced_request

    patcher.wrap(module.ClientSession, "_request", wrap_request)


def _add_missing(headers: Any) -> None:
    # httpx.Headers: `in` ignores case.
    for name, value in context.outgoing():
        if name not in headers:
            headers[name] = value


def _with_missing(given: Any, forwarded: context.Headers, defaults: Any) -> Any:
    # aiohttp takes a mapping or pairs; a list of pairs keeps whatever the app gave.
    pairs = list(given.items() if hasattr(given, "items") else given or ())
    present = {str(name).lower() for name, _ in pairs}
    pairs.extend(
        (name, value)
        for name, value in forwarded
        if name not in present and name not in defaults  # a session's headers ignore case
    )
    return pairs
