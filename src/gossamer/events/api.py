"""The broker's HTTP API (Starlette): topics, publish, streams, acks, seek, lag and SQL.

Every path that touches one topic starts with `/topics/{topic}/`, and the verb is the last
segment, so an AuthorizationPolicy written for HTTP governs topics too: `POST
/topics/users/publish` is publishing to `users`, `/topics/users/groups/billing/*` is consuming
it as group `billing`. Errors are JSON `{"error": ...}` with the same text in the
`x-gossamer-reason` header.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gossamer.events.broker import GroupLag
from gossamer.events.errors import (
    EventsError,
    InvalidEventError,
    InvalidRequestError,
    SchemaViolationError,
    TooLargeError,
)
from gossamer.events.groups import Ack, ConsumerGroup, Reset
from gossamer.events.log import Appended
from gossamer.events.model import parse_time
from gossamer.events.service import BrokerService
from gossamer.events.sql import QueryResult
from gossamer.events.topics import TopicConfig, check_topic_name

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"


def create_app(service: BrokerService) -> Starlette:
    """The ASGI app of one started broker service."""
    api = _Api(service)
    routes = [
        Route("/healthz", api.health, methods=["GET"]),
        Route("/topics", api.list_topics, methods=["GET"]),
        Route("/topics/{topic}", api.describe_topic, methods=["GET"]),
        Route("/topics/{topic}", api.declare_topic, methods=["PUT"]),
        Route("/topics/{topic}/publish", api.publish, methods=["POST"]),
        Route("/topics/{topic}/events", api.read_events, methods=["GET"]),
        Route("/topics/{topic}/query", api.query_topic, methods=["POST"]),
        Route("/topics/{topic}/groups", api.topic_groups, methods=["GET"]),
        Route("/topics/{topic}/groups/{group}", api.describe_group, methods=["GET"]),
        Route("/topics/{topic}/groups/{group}/subscribe", api.subscribe, methods=["GET"]),
        Route("/topics/{topic}/groups/{group}/ack", api.ack, methods=["POST"]),
        Route("/topics/{topic}/groups/{group}/heartbeat", api.heartbeat, methods=["POST"]),
        Route("/topics/{topic}/groups/{group}/seek", api.seek, methods=["POST"]),
        Route("/lag", api.lag, methods=["GET"]),
        Route("/query", api.query, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={EventsError: error_response})


def error_response(_: Request, error: Exception) -> Response:
    """The JSON reply for a backbone error, with its reason in `x-gossamer-reason`."""
    assert isinstance(error, EventsError)
    body: dict[str, Any] = {"error": error.reason}
    if isinstance(error, SchemaViolationError):
        body["violations"] = [
            {"index": v.index, "path": v.path, "message": v.message} for v in error.violations
        ]
    if isinstance(error, InvalidEventError):
        body["field"] = error.field
    reason = error.reason.encode("ascii", "replace").decode()[:200].replace("\n", " ")
    return JSONResponse(body, error.status, headers={"x-gossamer-reason": reason})


class _Api:
    """Request handlers over one BrokerService."""

    def __init__(self, service: BrokerService) -> None:
        self.service = service
        self.broker = service.broker

    async def health(self, _: Request) -> Response:
        return JSONResponse({"status": "ok", "topics": len(self.broker.topic_names())})

    async def list_topics(self, _: Request) -> Response:
        topics = []
        for name in self.broker.topic_names():
            config = self.broker.topic(name).config
            states = await self.broker.partitions(name)
            topics.append(
                {
                    "name": name,
                    "partitions": config.partitions,
                    "description": config.description,
                    "offsets": sum(s.end for s in states),
                    "bytes": sum(s.bytes for s in states),
                }
            )
        return JSONResponse({"topics": topics})

    async def describe_topic(self, request: Request) -> Response:
        name = request.path_params["topic"]
        config = self.broker.topic(name).config
        states = await self.broker.partitions(name)
        lags = await self.broker.lag(topic=name)
        return JSONResponse(
            {
                "name": name,
                "spec": config.to_spec(),
                "partitions": [
                    {"partition": s.partition, "start": s.start, "end": s.end, "bytes": s.bytes}
                    for s in states
                ],
                "groups": [_lag_json(g) for g in lags],
            }
        )

    async def declare_topic(self, request: Request) -> Response:
        name = check_topic_name(request.path_params["topic"])
        spec = await self._json(request)
        if not isinstance(spec, dict):
            raise InvalidRequestError("the body is a Topic spec: a JSON object")
        config = TopicConfig.from_spec(name, spec)
        await self.broker.declare(config)
        return JSONResponse({"name": name, "spec": config.to_spec()})

    async def publish(self, request: Request) -> Response:
        name = request.path_params["topic"]
        body = await self._json(request)
        if isinstance(body, dict) and "events" in body:
            items = body["events"]
            if not isinstance(items, list) or set(body) != {"events"}:
                raise InvalidRequestError('a batch is {"events": [event, ...]} and nothing else')
            results = await self.broker.publish(name, items)
            return JSONResponse({"results": [_appended_json(a) for a in results]})
        results = await self.broker.publish(name, [body])
        return JSONResponse(_appended_json(results[0]))

    async def read_events(self, request: Request) -> Response:
        name = request.path_params["topic"]
        config = self.broker.topic(name).config
        query = request.query_params
        partition = _int(query.get("partition"), "partition") if "partition" in query else None
        if partition is not None and not 0 <= partition < config.partitions:
            raise InvalidRequestError(f"topic {name} has no partition {partition}")
        if "offset" in query:
            if partition is None:
                raise InvalidRequestError("offset needs a partition")
            positions = {partition: _int(query["offset"], "offset")}
        else:
            where = _position(query.get("from", "beginning"))
            positions = await self.broker.positions(name, where)
            if partition is not None:
                positions = {partition: positions[partition]}
        follow = query.get("follow", "false") in ("1", "true", "yes")
        limit = _int(query.get("limit", "0" if follow else "100"), "limit")
        stream = _ended_by_errors(self._tail(name, positions, limit, follow))
        return StreamingResponse(stream, media_type=NDJSON)

    async def _tail(
        self, name: str, positions: dict[int, int], limit: int, follow: bool
    ) -> AsyncGenerator[str, None]:
        signal = self.broker.log.appended()
        keepalive = self.broker.settings.groups.keepalive_s
        sent = 0
        while True:
            if self.service.closing:
                yield '{"kind":"end","reason":"the broker is shutting down"}\n'
                return
            version = signal.version(name)
            found = False
            for partition, offset in sorted(positions.items()):
                want = self.broker.settings.max_read_events if limit <= 0 else limit - sent
                if want <= 0:
                    return
                events = await self.broker.read(name, partition, offset, want)
                if events:
                    found = True
                    positions[partition] = events[-1].offset + 1
                    sent += len(events)
                    yield "".join(e.to_json(kind="event") + "\n" for e in events)
            if limit > 0 and sent >= limit:
                return
            if not found:
                if not follow:
                    return
                if not await signal.wait(name, version, keepalive):
                    yield '{"kind":"keepalive"}\n'

    async def subscribe(self, request: Request) -> Response:
        group = self._group(request)
        query = request.query_params
        member_id = query.get("member") or f"member-{uuid.uuid4().hex[:12]}"
        try:
            reset = Reset(query.get("reset", Reset.LATEST.value))
        except ValueError:
            raise InvalidRequestError("reset is earliest or latest") from None
        member = await group.join(member_id, reset)
        session_ms = round(self.broker.settings.groups.session_timeout_s * 1000)
        log.info("group %s on %s: %s joined", group.name, group.topic.name, member_id)

        async def stream() -> AsyncGenerator[str, None]:
            try:
                while True:
                    poll = await group.poll(member)
                    lines: list[str] = []
                    if poll.assignment is not None:
                        lines.append(
                            json.dumps(
                                {
                                    "kind": "assignment",
                                    "member": member.id,
                                    "generation": poll.generation,
                                    "partitions": list(poll.assignment),
                                }
                            )
                        )
                    lines.extend(
                        d.event.to_json(kind="event", deliveries=d.deliveries)
                        for d in poll.deliveries
                    )
                    if poll.ended is not None:
                        lines.append(json.dumps({"kind": "end", "reason": poll.ended}))
                    elif not lines:
                        lines.append('{"kind":"keepalive"}')
                    yield "\n".join(lines) + "\n"
                    if poll.ended is not None:
                        return
            finally:
                group.leave(member, "disconnected")

        # The client heartbeats well within this; it learns it before the first event.
        headers = {"x-gossamer-session-timeout-ms": str(session_ms)}
        return StreamingResponse(_ended_by_errors(stream()), media_type=NDJSON, headers=headers)

    async def ack(self, request: Request) -> Response:
        group = self._group(request)
        body = await self._json(request)
        if not isinstance(body, dict) or not isinstance(body.get("member"), str):
            raise InvalidRequestError('an ack is {"member": ID, "acks": [...]}')
        raw = body.get("acks", [])
        if not isinstance(raw, list):
            raise InvalidRequestError("acks is a list")
        acks = [_ack(item) for item in raw]
        result = await group.ack(body["member"], acks)
        return JSONResponse(
            {
                "committed": {str(p): o for p, o in result.committed.items()},
                "rejected": [{"partition": p, "offset": o} for p, o in result.rejected],
            }
        )

    async def heartbeat(self, request: Request) -> Response:
        group = self._group(request)
        body = await self._json(request)
        if not isinstance(body, dict) or not isinstance(body.get("member"), str):
            raise InvalidRequestError('a heartbeat is {"member": ID}')
        member = group.touch(body["member"])
        return JSONResponse({"member": member.id, "partitions": list(member.partitions)})

    async def seek(self, request: Request) -> Response:
        group = self._group(request)
        body = await self._json(request)
        if not isinstance(body, dict):
            raise InvalidRequestError('seek takes {"to": ...} or {"offsets": {...}}')
        topic = group.topic.name
        if "offsets" in body:
            raw = body["offsets"]
            if not isinstance(raw, dict):
                raise InvalidRequestError('offsets is {"PARTITION": OFFSET, ...}')
            offsets = {_int(p, "partition"): _int(o, "offset") for p, o in raw.items()}
            unknown = [p for p in offsets if not 0 <= p < group.topic.partitions]
            if unknown:
                raise InvalidRequestError(f"topic {topic} has no partition {unknown[0]}")
        else:
            offsets = await self.broker.positions(topic, _position(str(body.get("to", ""))))
        await group.seek(offsets)
        return JSONResponse({"committed": {str(p): o for p, o in sorted(offsets.items())}})

    async def describe_group(self, request: Request) -> Response:
        group = self._group(request)
        lags = await self.broker.lag(topic=group.topic.name, group=group.name)
        body: dict[str, Any] = _lag_json(lags[0]) if lags else {"group": group.name}
        body["generation"] = group.generation
        body["assignment"] = {str(p): m for p, m in sorted(group.owner.items())}
        body["members"] = [
            {"member": m.id, "partitions": list(m.partitions)} for m in group.members.values()
        ]
        return JSONResponse(body)

    async def topic_groups(self, request: Request) -> Response:
        name = request.path_params["topic"]
        self.broker.topic(name)
        return JSONResponse({"groups": [_lag_json(g) for g in await self.broker.lag(topic=name)]})

    async def lag(self, request: Request) -> Response:
        query = request.query_params
        lags = await self.broker.lag(topic=query.get("topic"), group=query.get("group"))
        return JSONResponse({"groups": [_lag_json(g) for g in lags]})

    async def query(self, request: Request) -> Response:
        return await self._query(request, None)

    async def query_topic(self, request: Request) -> Response:
        name = request.path_params["topic"]
        self.broker.topic(name)
        return await self._query(request, name)

    async def _query(self, request: Request, topic: str | None) -> Response:
        body = await self._json(request)
        if not isinstance(body, dict) or not isinstance(body.get("sql"), str):
            raise InvalidRequestError('a query is {"sql": "SELECT ...", "format": "json"|"csv"}')
        output = body.get("format", request.query_params.get("format", "json"))
        if output not in ("json", "csv"):
            raise InvalidRequestError("format is json or csv")
        result = await self.service.query(body["sql"], topic)
        if output == "csv":
            return Response(_csv(result), media_type="text/csv")
        return JSONResponse(result.as_json())

    def _group(self, request: Request) -> ConsumerGroup:
        name = request.path_params["group"]
        if not name or len(name) > 200 or "/" in name:
            raise InvalidRequestError("a group name is 1 to 200 characters without '/'")
        return self.broker.group(request.path_params["topic"], name)

    async def _json(self, request: Request) -> Any:
        limit = self.broker.settings.max_request_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise TooLargeError(f"the body is {declared} bytes; at most {limit}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLargeError(f"the body is more than {limit} bytes")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError) as error:
            raise InvalidRequestError(f"the body is not JSON: {error}") from None


async def _ended_by_errors(lines: AsyncGenerator[str, None]) -> AsyncIterator[str]:
    """A stream whose failure (the log unreachable, say) is its last line, not a cut connection."""
    async with contextlib.aclosing(lines):
        try:
            async for line in lines:
                yield line
        except EventsError as error:
            yield json.dumps({"kind": "end", "reason": error.reason}) + "\n"


def _appended_json(appended: Appended) -> dict[str, Any]:
    return {
        "id": appended.id,
        "partition": appended.partition,
        "offset": appended.offset,
        "duplicate": appended.duplicate,
    }


def _lag_json(lag: GroupLag) -> dict[str, Any]:
    return {
        "topic": lag.topic,
        "group": lag.group,
        "members": lag.members,
        "lag": lag.total,
        "partitions": [
            {"partition": p.partition, "committed": p.committed, "end": p.end, "lag": p.lag}
            for p in lag.partitions
        ],
    }


def _ack(item: object) -> Ack:
    if not isinstance(item, dict):
        raise InvalidRequestError('each ack is {"partition": P, "offset": O, "error"?: TEXT}')
    error = item.get("error")
    if error is not None and not isinstance(error, str):
        raise InvalidRequestError("an ack's error is a string saying why handling failed")
    return Ack(_int(item.get("partition"), "partition"), _int(item.get("offset"), "offset"), error)


def _int(value: object, name: str) -> int:
    if isinstance(value, bool):
        raise InvalidRequestError(f"{name} must be an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.lstrip("-").isdigit():
        number = int(value)
    else:
        raise InvalidRequestError(f"{name} must be an integer, not {value!r}")
    if number < 0:
        raise InvalidRequestError(f"{name} must not be negative")
    return number


def _position(where: str) -> str:
    """`beginning`, `end`, or an RFC 3339 time turned into milliseconds."""
    if where in ("beginning", "end"):
        return where
    try:
        return str(parse_time(where))
    except InvalidEventError:
        raise InvalidRequestError(
            f"from/to is beginning, end or an RFC 3339 time, not {where!r}"
        ) from None


def _csv(result: QueryResult) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow(
            [json.dumps(v) if isinstance(v, dict | list) else ("" if v is None else v) for v in row]
        )
    return out.getvalue()
