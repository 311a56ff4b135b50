"""The built-in telemetry's routes: the span receiver the proxies export to, and the queries
behind `gossamer stat`, `edges`, `top`, `trace` and `tap`.

- `POST /telemetry/v1/zipkin/spans` (Zipkin v2 JSON): a workload token, for spans of its own
  namespace, or the admin.
- `GET /telemetry/v1/stat?kind=service|workload&namespace=NS&window=SECONDS`, `/history`
  (the same per slot, for sparklines), `/edges`, `/graph` (same parameters),
  `/traces?service=NAME.NS&errors=true&order=recent|slowest&limit=N`, `/traces/{id}`,
  `/status`: the admin.
- `GET /telemetry/v1/tap?service=NAME&namespace=NS&path=P&method=M&reporter=R&count=N&duration=S`:
  the admin only, since taps show paths and headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gossamer.control.api.guard import PRINCIPAL, authorize
from gossamer.control.api.status import ApiError
from gossamer.control.auth import MESH_GROUP, SPANS, Access, Principal, Verb
from gossamer.control.telemetry.service import Telemetry
from gossamer.control.telemetry.spans import SpanError, StoredSpan, decode_zipkin
from gossamer.control.telemetry.taps import TapLimitError
from gossamer.snapshot.protocol import TapFilter

DEFAULT_WINDOW_S = 60.0
MAX_TAP_EVENTS = 10_000
MAX_TAP_S = 600.0
_encoder = msgspec.json.Encoder()


class TelemetryEndpoints:
    """Handlers of the telemetry routes."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def routes(self) -> list[Route]:
        """Where each handler is served."""
        base = "/telemetry/v1"
        return [
            Route(f"{base}/zipkin/spans", self.receive_zipkin, methods=["POST"]),
            Route(f"{base}/stat", self.stat, methods=["GET"]),
            Route(f"{base}/edges", self.edges, methods=["GET"]),
            Route(f"{base}/graph", self.graph, methods=["GET"]),
            Route(f"{base}/history", self.history, methods=["GET"]),
            Route(f"{base}/traces", self.traces, methods=["GET"]),
            Route(f"{base}/traces/{{trace_id}}", self.trace, methods=["GET"]),
            Route(f"{base}/tap", self.tap, methods=["GET"]),
            Route(f"{base}/status", self.status, methods=["GET"]),
        ]

    async def receive_zipkin(self, request: Request) -> Response:
        """Keep a batch of spans, or refuse it whole: 400 malformed, 403 another namespace's,
        413 too large. Every refusal is counted by reason."""
        store = self.telemetry.spans
        limit = self.telemetry.settings.max_span_body_bytes
        try:
            body = await _body(request, limit)
        except _TooLargeError:
            store.refuse("too_large")
            raise ApiError(
                413, "RequestEntityTooLarge", f"a span batch is {limit} bytes at most"
            ) from None
        except ClientDisconnect:
            store.refuse("incomplete")
            return Response(status_code=400)
        try:
            spans = decode_zipkin(body)
        except SpanError as error:
            store.refuse(error.reason)
            raise ApiError(400, "BadRequest", str(error)) from None
        principal: Principal = request.scope[PRINCIPAL]
        for namespace in {_namespace(span) for span in spans}:
            if not principal.allows(Access(Verb.CREATE, MESH_GROUP, SPANS, namespace)):
                store.refuse("forbidden", len(spans))
                raise ApiError(
                    403, "Forbidden", f"{principal.name} cannot report spans of {namespace}"
                )
        kept = store.add(spans)
        return JSONResponse({"accepted": kept}, status_code=202)

    async def stat(self, request: Request) -> Response:
        """Golden metrics per service or workload."""
        authorize(request, Access(Verb.LIST, MESH_GROUP, "metrics"))
        kind = request.query_params.get("kind", "service")
        if kind not in ("service", "workload"):
            raise ApiError(400, "BadRequest", "kind must be service or workload")
        namespace = request.query_params.get("namespace") or None
        return JSONResponse(self.telemetry.stat(kind, namespace, _window(request)))

    async def edges(self, request: Request) -> Response:
        """Golden metrics per edge (caller workload -> destination service)."""
        authorize(request, Access(Verb.LIST, MESH_GROUP, "metrics"))
        namespace = request.query_params.get("namespace") or None
        return JSONResponse(self.telemetry.edges(namespace, _window(request)))

    async def graph(self, request: Request) -> Response:
        """The service graph."""
        authorize(request, Access(Verb.LIST, MESH_GROUP, "metrics"))
        namespace = request.query_params.get("namespace") or None
        return JSONResponse(self.telemetry.graph(namespace, _window(request)))

    async def history(self, request: Request) -> Response:
        """Golden metrics per service or workload and per slot of the store (sparklines)."""
        authorize(request, Access(Verb.LIST, MESH_GROUP, "metrics"))
        kind = request.query_params.get("kind", "service")
        if kind not in ("service", "workload"):
            raise ApiError(400, "BadRequest", "kind must be service or workload")
        namespace = request.query_params.get("namespace") or None
        return JSONResponse(self.telemetry.history(kind, namespace, _window(request)))

    async def traces(self, request: Request) -> Response:
        """Recent, slowest or failed traces, of one service or all."""
        authorize(request, Access(Verb.LIST, MESH_GROUP, "traces"))
        query = request.query_params
        order = query.get("order", "recent")
        if order not in ("recent", "slowest"):
            raise ApiError(400, "BadRequest", "order must be recent or slowest")
        items = self.telemetry.spans.find(
            service=query.get("service") or None,
            errors=query.get("errors", "") in ("1", "true"),
            order=order,
            limit=_integer(query.get("limit"), "limit", 20, 1, 1000),
        )
        return JSONResponse({"kind": "TraceList", "items": items})

    async def trace(self, request: Request) -> Response:
        """One trace's spans, in start order."""
        authorize(request, Access(Verb.GET, MESH_GROUP, "traces"))
        trace_id = request.path_params["trace_id"]
        trace = self.telemetry.spans.get(trace_id)
        if trace is None:
            raise ApiError(404, "NotFound", f'trace "{trace_id}" not found (or no longer kept)')
        spans = sorted(trace.spans, key=lambda span: (span.timestamp, -span.duration))
        body = {"kind": "Trace", "traceId": trace.trace_id, "spans": spans}
        return Response(_encoder.encode(body), media_type="application/json")

    async def status(self, request: Request) -> Response:
        """The stores' and the scraper's figures."""
        authorize(request, Access(Verb.GET, MESH_GROUP, "metrics"))
        return JSONResponse(self.telemetry.status())

    async def tap(self, request: Request) -> Response:
        """Requests to a service as proxies finish them, one JSON object per line, until
        `count` events, `duration` seconds, or the client goes."""
        query = request.query_params
        namespace = query.get("namespace") or "default"
        authorize(request, Access(Verb.WATCH, MESH_GROUP, "taps", namespace))
        service = query.get("service", "")
        if not service:
            raise ApiError(400, "BadRequest", "a tap needs ?service=NAME")
        reporter = query.get("reporter", "")
        if reporter not in ("", "source", "destination"):
            raise ApiError(400, "BadRequest", "reporter must be source or destination")
        wanted = TapFilter(
            service, namespace, query.get("path", ""), query.get("method", "").upper(), reporter
        )
        count = _integer(query.get("count"), "count", 100, 1, MAX_TAP_EVENTS)
        duration = _seconds(query.get("duration"), "duration", 30.0, MAX_TAP_S)
        try:
            session = await self.telemetry.taps.open(wanted, count, duration)
        except TapLimitError as error:
            raise ApiError(429, "TooManyRequests", str(error)) from None
        hub = self.telemetry.taps

        async def lines() -> AsyncIterator[bytes]:
            sent = 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + duration + 1.0
            ended = asyncio.ensure_future(session.ended.wait())
            try:
                while sent < count:
                    if session.queue.empty() and ended.done():
                        break
                    getter = asyncio.ensure_future(session.queue.get())
                    done, _ = await asyncio.wait(
                        {getter, ended},
                        timeout=max(0.0, deadline - loop.time()),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if getter not in done:
                        getter.cancel()
                        if not done:
                            break
                        continue
                    sent += 1
                    yield _encoder.encode(getter.result()) + b"\n"
                yield _encoder.encode({"end": True, "events": sent, "dropped": session.dropped})
                yield b"\n"
            finally:
                ended.cancel()
                with contextlib.suppress(Exception):
                    await hub.close(session)

        return StreamingResponse(lines(), media_type="application/x-ndjson")


class _TooLargeError(Exception):
    pass


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLargeError
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def _namespace(span: StoredSpan) -> str:
    """The namespace a span reports from: what its service name says (`NAME.NAMESPACE`, as
    the proxies name it), else Istio's `istio.namespace` tag."""
    name, dot, namespace = span.service.rpartition(".")
    if dot and name and namespace:
        return namespace
    return span.tags.get("istio.namespace") or "default"


def _window(request: Request) -> float:
    return _seconds(request.query_params.get("window"), "window", DEFAULT_WINDOW_S, 24 * 3600.0)


def _seconds(text: str | None, name: str, default: float, most: float) -> float:
    if text is None or text == "":
        return default
    try:
        value = float(text.removesuffix("s"))
    except ValueError:
        raise ApiError(400, "BadRequest", f"{name} must be a number of seconds") from None
    if not math.isfinite(value) or value <= 0 or value > most:
        raise ApiError(400, "BadRequest", f"{name} must be above 0 and at most {most:g} s")
    return value


def _integer(text: str | None, name: str, default: int, least: int, most: int) -> int:
    if text is None or text == "":
        return default
    if not text.isdigit() or not least <= int(text) <= most:
        raise ApiError(400, "BadRequest", f"{name} must be an integer from {least} to {most}")
    return int(text)
