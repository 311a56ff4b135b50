"""What every Python service of the asset solution shares: its data, its errors, its server.

Each service is a Starlette app served by uvicorn on 127.0.0.1:$PORT (what `gossamer up` gives
it), owns one sqlite file under $GOSSAMER_DATA, calls other services by name through its sidecar
(HTTP_PROXY) and publishes through the broker named by $GOSSAMER_EVENTS.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gossamer.events import tracecontext
from gossamer.events.client import BrokerError, ClientTimeouts, EventsClient, environment_proxy
from gossamer.events.idempotency import ProcessedEvents
from gossamer.events.outbox import OutboxRelay, RelaySettings
from gossamer.events.wire import ReceivedEvent

log = logging.getLogger("assets")

TRACE_HEADERS = (
    "traceparent",
    "tracestate",
    "x-request-id",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
)
"""Headers a service copies from the request it handles to the calls it makes."""

JWT_PAYLOAD_HEADER = "x-jwt-payload"
"""Where the sidecar puts a verified token's claims (RequestAuthentication outputPayloadToHeader).

The sidecar drops a client's own value of this header, so a service reads claims from it and
never parses a token itself."""

_incoming: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("assets_incoming", default=())


class Problem(HTTPException):
    """A request the service refuses: a status, what is wrong, and where (`field`)."""

    def __init__(self, status: int, error: str, **details: Any) -> None:
        super().__init__(status, error)
        self.error = error
        self.details = details


def service_name() -> str:
    """This service, as `gossamer up` names it (the Deployment's app label)."""
    return os.environ.get("GOSSAMER_SERVICE", Path(sys.argv[0]).stem)


def data_dir() -> Path:
    """The folder this service keeps its data in: $GOSSAMER_DATA, else ./.data/SERVICE."""
    folder = Path(os.environ.get("GOSSAMER_DATA") or Path(".data") / service_name())
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_db(name: str, schema: Iterable[str]) -> sqlite3.Connection:
    """This service's sqlite file (WAL, shared by its replicas), with `schema` applied."""
    conn = sqlite3.connect(
        data_dir() / name, isolation_level=None, check_same_thread=False, timeout=10.0
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA foreign_keys=ON")
    with transaction(conn):
        for statement in schema:
            conn.execute(statement)
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Any:
    """One write transaction (BEGIN IMMEDIATE: replicas sharing the file queue, not fail)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


async def body(request: Request) -> dict[str, Any]:
    """The request's JSON object, or 400 saying why it is not one."""
    raw = await request.body()
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise Problem(400, f"the body is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise Problem(400, "the body must be a JSON object")
    return value


def field(
    data: Mapping[str, Any],
    name: str,
    kind: type | tuple[type, ...] = str,
    *,
    required: bool = True,
    default: Any = None,
) -> Any:
    """`data[name]` if it is of `kind`; 400 naming the field when missing or of another type."""
    if name not in data or data[name] is None:
        if required:
            raise Problem(400, f"{name}: required", field=name)
        return default
    value = data[name]
    if (
        isinstance(value, bool)
        and kind is not bool
        and (kind is int or kind is float or kind == (int, float))
    ):
        raise Problem(400, f"{name}: must be a number", field=name)
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        expected = {
            "str": "a string",
            "int": "an integer",
            "dict": "an object",
            "list": "a list",
            "bool": "true or false",
        }.get(names, names)
        raise Problem(400, f"{name}: must be {expected}", field=name)
    if isinstance(value, str) and required and not value.strip():
        raise Problem(400, f"{name}: must not be empty", field=name)
    return value


def claims(request: Request) -> dict[str, Any]:
    """The verified token's claims the sidecar passed on; 401 when the request had no token."""
    encoded = request.headers.get(JWT_PAYLOAD_HEADER)
    if not encoded:
        raise Problem(401, "log in first: this needs a bearer token")
    padded = encoded + "=" * (-len(encoded) % 4)
    try:
        payload = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, json.JSONDecodeError):
        raise Problem(401, "the token's claims cannot be read") from None
    if not isinstance(payload, dict):
        raise Problem(401, "the token's claims cannot be read")
    return payload


def require_role(request: Request, role: str) -> dict[str, Any]:
    """The caller's claims if they hold `role`; 403 otherwise."""
    found = claims(request)
    if role not in found.get("roles", []):
        raise Problem(403, f"this needs the {role} role")
    return found


def forwarded_headers() -> dict[str, str]:
    """Trace headers of the request being handled, for calls made while handling it."""
    return dict(_incoming.get())


def mesh_client(timeout: float = 5.0) -> httpx.AsyncClient:
    """A client for other services by name (`http://auth-svc:8080`): through the sidecar."""
    transport = httpx.AsyncHTTPTransport(
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        proxy=environment_proxy("http://service"),
    )
    return httpx.AsyncClient(
        timeout=timeout, transport=transport, event_hooks={"request": [_add_trace_headers]}
    )


async def _add_trace_headers(request: httpx.Request) -> None:
    for name, value in _incoming.get():
        request.headers.setdefault(name, value)


class _Context:
    """ASGI middleware: remembers the incoming trace headers for calls made downstream."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wanted = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name.decode("latin-1") in TRACE_HEADERS
        }
        token = _incoming.set(tuple(wanted.items()))
        try:
            # Events published while handling the request continue its trace.
            with tracecontext.use(tracecontext.TraceContext.parse(wanted)):
                await self.app(scope, receive, send)
        finally:
            _incoming.reset(token)


async def _problem(request: Request, error: Exception) -> Response:
    if isinstance(error, Problem):
        return JSONResponse(
            {"error": error.error, **error.details},
            status_code=error.status_code,
            headers={"x-gossamer-reason": error.error[:200]},
        )
    assert isinstance(error, HTTPException)
    return JSONResponse({"error": error.detail}, status_code=error.status_code)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "service": service_name()})


Background = Callable[[asyncio.Event], Awaitable[None]]


def application(
    routes: list[BaseRoute],
    background: Iterable[Background] = (),
    on_stop: Iterable[Callable[[], Any]] = (),
) -> Starlette:
    """A service: its routes plus /healthz, JSON errors, and tasks that run while it serves."""
    tasks = list(background)
    closers = list(on_stop)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        running = [asyncio.create_task(_supervised(task, stop)) for task in tasks]
        try:
            yield
        finally:
            stop.set()
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            for close in closers:
                result = close()
                if asyncio.iscoroutine(result):
                    await result

    app = Starlette(
        routes=[Route("/healthz", healthz), *routes],
        lifespan=lifespan,
        exception_handlers={HTTPException: _problem},
    )
    app.add_middleware(_Context)
    return app


async def _supervised(task: Background, stop: asyncio.Event) -> None:
    """Run a background loop; a failure is logged and the loop started again a second later."""
    while not stop.is_set():
        try:
            await task(stop)
            return
        except asyncio.CancelledError:
            raise
        except (BrokerError, httpx.HTTPError) as error:
            # Expected while the mesh starts or the broker restarts: one line, not a traceback.
            log.warning("%s: %s; again in 1 s", getattr(task, "__name__", task), error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        except Exception:
            log.exception("%s failed; starting it again in 1 s", getattr(task, "__name__", task))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


def serve(app: Starlette) -> None:
    """Serve on 127.0.0.1:$PORT until SIGTERM (uvicorn drains requests in flight first)."""
    logging.basicConfig(level=logging.INFO, format=f"{service_name()}: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request is noise
    port = int(os.environ.get("PORT", "8080"))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="uvloop",
        timeout_graceful_shutdown=5,
    )


Handler = Callable[[sqlite3.Connection, ReceivedEvent], None]
"""Applies one event to the service's own tables, inside the transaction that records it."""


def events_client() -> EventsClient:
    """The broker ($GOSSAMER_EVENTS), reached through the sidecar like any service."""
    return EventsClient(timeouts=ClientTimeouts(read=30.0))


def relay(db_file: str) -> Background:
    """A background task publishing this service's outbox (in `db_file`) to the broker."""

    async def outbox_relay(stop: asyncio.Event) -> None:
        async with events_client() as client:
            relay = OutboxRelay(data_dir() / db_file, client, RelaySettings(idle_poll_s=0.05))
            try:
                await relay.run(stop)
            finally:
                relay.close()

    return outbox_relay


def consumer(topic: str, group: str, db_file: str, handle: Handler) -> Background:
    """A background task applying `topic`'s events once each (as `group`) to `db_file`."""

    async def consume(stop: asyncio.Event) -> None:
        seen = ProcessedEvents(data_dir() / db_file, consumer=f"{group}:{topic}")
        try:
            async with (
                events_client() as client,
                client.subscribe(
                    topic, group, member=os.environ.get("GOSSAMER_REPLICA"), from_beginning=True
                ) as deliveries,
            ):
                async for event in deliveries:
                    with event.trace(), seen.handle(event.id) as conn:
                        if conn is not None:
                            handle(conn, event)
                    await deliveries.ack(event)
                    if stop.is_set():
                        return
        finally:
            seen.close()

    consume.__name__ = f"consumer of {topic}"
    return consume
