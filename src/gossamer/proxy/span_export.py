"""Spans to a tracing backend, off the request path: one asyncio task per proxy takes batches
from the `SpanBuffer` and POSTs them as Zipkin v2 JSON (`/api/v2/spans`) or OTLP/HTTP JSON
(`/v1/traces`), every `flush_interval` or as soon as a batch is full, each POST within
`timeout`. One POST at a time: a backend that is down or slow makes the buffer fill, and the
spans that do not fit are dropped and counted, never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from gossamer.proxy.export_http import CollectorConnection
from gossamer.proxy.stats import ProxyStats
from gossamer.proxy.tracing import Span, SpanBuffer
from gossamer.snapshot import Node, TracingProvider

log = logging.getLogger(__name__)

SPANS_SENT: Final = "gossamer_tracing_spans_sent_total"
SPANS_FAILED: Final = "gossamer_tracing_spans_failed_total"
SPANS_BUFFERED: Final = "gossamer_tracing_spans_buffered"
CLOSE_FLUSH_S: Final = 1.0
"""How long closing the proxy waits to send the spans still buffered."""
_OTLP_KIND = {"SERVER": 2, "CLIENT": 3}
_OTLP_STATUS_ERROR = 2

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class ExportCredentials:
    """What the proxy shows its own control plane when that is where spans go (its built-in
    receiver): the workload token, and the context that verifies the control plane. They are
    used only for a provider URL at one of `origins`: a token never goes to another backend."""

    origins: tuple[str, ...]
    """`scheme://host:port` of each control plane the proxy knows."""
    token: str
    context: ssl.SSLContext | None = None

    def covers(self, url: str) -> bool:
        """Whether `url` is at one of the control planes."""
        return origin(url) in self.origins


def origin(url: str) -> str:
    """`scheme://host:port` of a URL, the port made explicit."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}"


class ProxyIdentity(msgspec.Struct, frozen=True):
    """Who reports the spans: Istio's service name, node id and canonical labels."""

    service_name: str
    node_id: str
    canonical_service: str
    canonical_revision: str
    namespace: str
    mesh_id: str

    @classmethod
    def of(cls, node: Node, router: bool, address: str) -> ProxyIdentity:
        """A sidecar's or gateway's (`router`, as Istio calls it) identity from its node."""
        kind = "router" if router else "sidecar"
        domain = node.cluster_domain
        return cls(
            service_name=f"{node.service}.{node.namespace}",
            node_id=f"{kind}~{address}~{node.workload}.{node.namespace}~{node.namespace}.svc.{domain}",
            canonical_service=node.service,
            canonical_revision=node.version,
            namespace=node.namespace,
            mesh_id=domain,
        )


def span_name(span: Span) -> str:
    """Istio's operation name: the destination service and port, `HOST:PORT/*`."""
    parts = span.cluster.split("|")  # outbound|9080|v1|reviews..., inbound|9080||
    if len(parts) == 4 and parts[1]:
        host = parts[3] or (span.service if span.service != "unknown" else "")
        if host:
            return f"{host}:{parts[1]}/*"
    return f"{span.authority or '-'}/*"


def span_tags(span: Span, identity: ProxyIdentity) -> dict[str, str]:
    """Envoy's and Istio's span tags, as strings."""
    tags = {
        "component": "proxy",
        "node_id": identity.node_id,
        "istio.canonical_service": identity.canonical_service,
        "istio.canonical_revision": identity.canonical_revision,
        "istio.namespace": identity.namespace,
        "istio.mesh_id": identity.mesh_id,
        "http.method": span.method.decode("latin-1"),
        "http.url": (
            f"{span.scheme.decode()}://{span.authority}{span.target.decode('latin-1')}"
            if span.target.startswith(b"/")
            else span.target.decode("latin-1")
        ),
        "http.protocol": f"HTTP/{span.protocol}",
        "http.status_code": str(span.status),
        "response_flags": span.flags,
        "upstream_cluster": span.cluster or "-",
        "upstream_cluster.name": span.cluster or "-",
        "downstream_cluster": "-",
        "peer.address": span.peer,
        "request_size": str(span.request_size),
        "response_size": str(span.response_size),
        "guid:x-request-id": span.request_id.decode("latin-1"),
    }
    if span.upstream_identity:
        tags["upstream_peer_principal"] = span.upstream_identity
    if span.status >= 500:
        tags["error"] = "true"
    return tags


def zipkin_body(spans: Sequence[Span], identity: ProxyIdentity) -> bytes:
    """A Zipkin v2 JSON list of spans (`POST /api/v2/spans`)."""
    local = {"serviceName": identity.service_name}
    items: list[dict[str, Any]] = []
    for span in spans:
        item: dict[str, Any] = {
            "traceId": span.trace.decode(),
            "id": span.span.decode(),
            "kind": span.kind,
            "name": span_name(span),
            "timestamp": span.start_us,
            "duration": max(span.duration_us, 1),
            "localEndpoint": local,
            "tags": span_tags(span, identity),
        }
        if span.parent is not None:
            item["parentId"] = span.parent.decode()
        if span.peer:
            item["remoteEndpoint"] = {"ipv6" if ":" in span.peer else "ipv4": span.peer}
        items.append(item)
    return _encoder.encode(items)


def otlp_body(spans: Sequence[Span], identity: ProxyIdentity) -> bytes:
    """An OTLP ExportTraceServiceRequest in its JSON encoding (`POST /v1/traces`)."""
    resource = {
        "attributes": _attributes(
            {
                "service.name": identity.service_name,
                "istio.canonical_service": identity.canonical_service,
                "istio.canonical_revision": identity.canonical_revision,
                "istio.namespace": identity.namespace,
            }
        )
    }
    items: list[dict[str, Any]] = []
    for span in spans:
        start_ns = span.start_us * 1000
        tags = span_tags(span, identity)
        item: dict[str, Any] = {
            "traceId": span.trace.decode(),
            "spanId": span.span.decode(),
            "name": span_name(span),
            "kind": _OTLP_KIND[span.kind],
            "startTimeUnixNano": str(start_ns),
            "endTimeUnixNano": str(start_ns + max(span.duration_us, 1) * 1000),
            "attributes": _attributes(tags),
        }
        if span.parent is not None:
            item["parentSpanId"] = span.parent.decode()
        if "error" in tags:
            item["status"] = {"code": _OTLP_STATUS_ERROR}
        items.append(item)
    request = {
        "resourceSpans": [
            {"resource": resource, "scopeSpans": [{"scope": {"name": "gossamer"}, "spans": items}]}
        ]
    }
    return _encoder.encode(request)


def _attributes(values: dict[str, str]) -> list[dict[str, Any]]:
    return [{"key": key, "value": {"stringValue": value}} for key, value in values.items()]


class SpanExporter:
    """The task that sends what the buffer holds; `configure` follows snapshot changes."""

    def __init__(self, buffer: SpanBuffer, stats: ProxyStats) -> None:
        self.buffer = buffer
        self.stats = stats
        self.provider: TracingProvider | None = None
        self.identity = ProxyIdentity.of(Node(), False, "127.0.0.1")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.connection = CollectorConnection()
        self.credentials: ExportCredentials | None = None
        """Set by the agent: used when spans go to the control plane's receiver."""
        buffer.wake = self._wake.set

    def __repr__(self) -> str:
        provider = self.provider
        where = f"{provider.format} {provider.url}" if provider is not None else "nowhere"
        return f"<SpanExporter to {where}, {len(self.buffer.spans)} buffered>"

    def configure(self, provider: TracingProvider, identity: ProxyIdentity) -> None:
        """Send to `provider` from now on, within its bounds; start the task on first use."""
        self.provider = provider
        self.identity = identity
        self.buffer.limit = provider.max_buffered_spans
        self.buffer.batch_size = provider.batch_size
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop the task, then send what is buffered, for at most `CLOSE_FLUSH_S`."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_FLUSH_S):
                await self.flush()
        self.connection.close()

    async def _run(self) -> None:
        while True:
            provider = self.provider
            assert provider is not None
            if self._failing:
                # A full batch does not hurry a backend that is down: spans wait, or drop.
                await asyncio.sleep(provider.flush_interval)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), provider.flush_interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Send the buffered spans, a batch per POST, until none is left or a POST fails."""
        while self.buffer.spans and self.provider is not None:
            provider = self.provider
            batch = self.buffer.take(provider.batch_size)
            self.stats.gauges[SPANS_BUFFERED] = len(self.buffer.spans)
            if not await self._send(provider, batch):
                break  # the rest waits for the next interval; a down backend is not hammered
        self.stats.gauges[SPANS_BUFFERED] = len(self.buffer.spans)

    async def _send(self, provider: TracingProvider, batch: list[Span]) -> bool:
        if provider.format == "zipkin":
            body = zipkin_body(batch, self.identity)
        else:
            body = otlp_body(batch, self.identity)
        credentials = self.credentials
        mine = credentials is not None and credentials.covers(provider.url)
        try:
            status = await self.connection.post(
                provider.url,
                body,
                "application/json",
                provider.timeout,
                token=credentials.token if credentials is not None and mine else "",
                context=credentials.context if credentials is not None and mine else None,
            )
            error = "" if 200 <= status < 300 else f"answered {status}"
        except TimeoutError:
            error = f"no answer within {provider.timeout} s"
        except (OSError, ValueError) as failure:
            error = str(failure) or failure.__class__.__name__
        if error:
            self.stats.incr(SPANS_FAILED, len(batch))
            if not self._failing:
                log.warning("spans to %s not sent: %s", provider.url, error)
            self._failing = True
            return False
        self.stats.incr(SPANS_SENT, len(batch))
        if self._failing:
            log.info("spans to %s are sent again", provider.url)
        self._failing = False
        return True
