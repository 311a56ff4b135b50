"""A tracing backend for tests: a real HTTP server (the test Backend's) that takes Zipkin v2 JSON
at /api/v2/spans and OTLP/HTTP JSON at /v1/traces, checks each body against its format, and
keeps the spans in one shape for assertions.

Zipkin bodies are checked field by field against Zipkin's v2 span model. OTLP bodies are decoded
with opentelemetry-proto's ExportTraceServiceRequest (unknown fields are errors); OTLP/JSON
writes ids as hex where protobuf's JSON mapping expects base64, so ids are converted first, as
the OTLP specification says a receiver must.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .backend import Backend, Received

_HEX16 = re.compile(r"[0-9a-f]{16}")
_TRACE_ID = re.compile(r"[0-9a-f]{16}|[0-9a-f]{32}")
_ZIPKIN_KEYS = {
    "traceId", "name", "parentId", "id", "kind", "timestamp", "duration", "debug", "shared",
    "localEndpoint", "remoteEndpoint", "annotations", "tags",
}  # fmt: skip
_ENDPOINT_KEYS = {"serviceName", "ipv4", "ipv6", "port"}
_OTLP_KINDS = {2: "SERVER", 3: "CLIENT"}


@dataclass
class ReceivedSpan:
    """A span as either format carried it."""

    trace: str
    span: str
    parent: str | None
    kind: str
    name: str
    service: str
    tags: dict[str, str]
    duration_us: int


@dataclass
class SpanReceiver(Backend):
    """Answers 202 (Zipkin) or 200 (OTLP) after `delay` seconds; records every span."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    posts: int = 0
    delay: float = 0.0
    problems: list[str] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when stopping: delayed answers go out at once."""

    @property
    def zipkin_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v2/spans"

    @property
    def otlp_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    async def stop(self) -> None:
        self.released.set()
        await asyncio.sleep(0)
        await super().stop()

    async def _answer(self, received: Received, writer: asyncio.StreamWriter) -> bool:
        self.posts += 1
        if self.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.released.wait(), self.delay)
        try:
            if received.method != "POST":
                raise ValueError(f"method {received.method}")
            if received.header("content-type") != "application/json":
                raise ValueError(f"content-type {received.header('content-type')}")
            if received.target == "/api/v2/spans":
                self.spans.extend(zipkin_spans(json.loads(received.body)))
                status = 202
            elif received.target == "/v1/traces":
                self.spans.extend(otlp_spans(received.body))
                status = 200
            else:
                raise ValueError(f"path {received.target}")
        except (ValueError, AssertionError, json_format.ParseError) as problem:
            self.problems.append(str(problem))
            status = 400
        body = b"{}" if status == 200 else b""
        writer.write(b"HTTP/1.1 %d OK\r\ncontent-length: %d\r\n\r\n%b" % (status, len(body), body))
        await writer.drain()
        return False


def zipkin_spans(body: Any) -> list[ReceivedSpan]:
    """Zipkin v2 spans, each checked against the model's fields and types."""
    assert isinstance(body, list), "a Zipkin v2 body is a list of spans"
    spans = []
    for item in body:
        assert isinstance(item, dict) and set(item) <= _ZIPKIN_KEYS, item
        assert _TRACE_ID.fullmatch(item["traceId"]), item["traceId"]
        assert _HEX16.fullmatch(item["id"]), item["id"]
        assert "parentId" not in item or _HEX16.fullmatch(item["parentId"])
        assert item["kind"] in ("CLIENT", "SERVER", "PRODUCER", "CONSUMER")
        assert isinstance(item["timestamp"], int) and item["timestamp"] > 1_600_000_000_000_000
        assert isinstance(item["duration"], int) and item["duration"] >= 1
        for endpoint in ("localEndpoint", "remoteEndpoint"):
            assert set(item.get(endpoint, {})) <= _ENDPOINT_KEYS
        tags = item.get("tags", {})
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()), tags
        spans.append(
            ReceivedSpan(
                trace=item["traceId"],
                span=item["id"],
                parent=item.get("parentId"),
                kind=item["kind"],
                name=item["name"],
                service=item["localEndpoint"]["serviceName"],
                tags=tags,
                duration_us=item["duration"],
            )
        )
    return spans


def otlp_spans(body: bytes) -> list[ReceivedSpan]:
    """OTLP/HTTP JSON spans, decoded by the protobuf classes of opentelemetry-proto."""
    data = json.loads(body)
    for resource_spans in data["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    request = ExportTraceServiceRequest()
    json_format.ParseDict(data, request)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                assert len(span.trace_id) == 16 and len(span.span_id) == 8
                assert span.end_time_unix_nano > span.start_time_unix_nano > 0
                spans.append(
                    ReceivedSpan(
                        trace=span.trace_id.hex(),
                        span=span.span_id.hex(),
                        parent=span.parent_span_id.hex() or None,
                        kind=_OTLP_KINDS[span.kind],
                        name=span.name,
                        service=resource["service.name"],
                        tags={a.key: a.value.string_value for a in span.attributes},
                        duration_us=(span.end_time_unix_nano - span.start_time_unix_nano) // 1000,
                    )
                )
    return spans
