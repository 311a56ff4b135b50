"""Spans from real proxies to a real tracing backend: a client proxy (outbound) in front of a
server proxy (inbound) in front of an app, exporting Zipkin v2 or OTLP JSON to a receiver that
checks what it gets."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import msgspec
import pytest

from gossamer.proxy.span_export import SPANS_FAILED, SPANS_SENT
from gossamer.proxy.tracing import SPANS_DROPPED
from gossamer.snapshot import Node, ServiceLabels, Snapshot, Telemetry, Tracing, TracingProvider
from gossamer.snapshot.model import Role, TraceFormat

from ..control.test_mesh_push import eventually_async
from .backend import Backend
from .harness import Running, cluster, snapshot, to
from .span_receiver import ReceivedSpan, SpanReceiver
from .waiting import eventually

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
RunProxy = Callable[[Snapshot], Awaitable[Running]]


@pytest.fixture
async def receiver() -> AsyncIterator[SpanReceiver]:
    server = SpanReceiver("spans")
    await server.start()
    yield server
    await server.stop()


def provider(url: str, form: TraceFormat = "zipkin", **bounds: float) -> TracingProvider:
    settings = {"flush_interval": 0.02, "timeout": 2.0, **bounds}
    return TracingProvider(name="test", format=form, url=url, **settings)  # type: ignore[arg-type]


def traced(
    config: Snapshot, role: Role, workload: str, exporter: TracingProvider, sampling: float
) -> Snapshot:
    listener = msgspec.structs.replace(config.listeners[0], role=role)
    return msgspec.structs.replace(
        config,
        listeners=(listener,),
        node=Node(workload=workload, service=workload),
        telemetry=Telemetry(tracing=Tracing(sampling=sampling, provider=exporter)),
    )


async def chain(
    run_proxy: RunProxy, app: Backend, exporter: TracingProvider, sampling: float = 100.0
) -> tuple[Running, Running]:
    """productpage's sidecar (client spans) -> reviews' sidecar (server spans) -> the app."""
    labels = ServiceLabels(service="reviews.default.svc.cluster.local")
    server = await run_proxy(
        traced(
            snapshot([to("inbound|9080||")], [cluster("inbound|9080||", app.port, labels=labels)]),
            "inbound", "reviews", exporter, sampling,
        )
    )  # fmt: skip
    name = "outbound|9080||reviews.default.svc.cluster.local"
    client = await run_proxy(
        traced(
            snapshot([to(name)], [cluster(name, server.port)]),
            "outbound", "productpage", exporter, sampling,
        )
    )  # fmt: skip
    return client, server


async def get(
    client: Running, headers: dict[str, str] | None = None, path: str = "/reviews/1"
) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5.0) as http:
        return await http.get(
            f"{client.url}{path}", headers={"host": "reviews:9080", **(headers or {})}
        )


async def spans_of(receiver: SpanReceiver, count: int) -> list[ReceivedSpan]:
    await eventually(lambda: len(receiver.spans) >= count, what=f"{count} spans")
    assert not receiver.problems, receiver.problems
    return receiver.spans


def by_kind(spans: list[ReceivedSpan]) -> tuple[ReceivedSpan, ReceivedSpan]:
    [client] = [s for s in spans if s.kind == "CLIENT"]
    [server] = [s for s in spans if s.kind == "SERVER"]
    return client, server


async def test_a_request_through_two_sidecars_makes_a_client_span_and_its_child_server_span(
    run_proxy: RunProxy, backend: Backend, receiver: SpanReceiver
) -> None:
    client, _ = await chain(run_proxy, backend, provider(receiver.zipkin_url))
    assert (await get(client)).status_code == 200
    outbound, inbound = by_kind(await spans_of(receiver, 2))
    assert outbound.trace == inbound.trace and len(outbound.trace) == 32
    assert outbound.parent is None, "no trace came: the client span is the root"
    assert inbound.parent == outbound.span
    # The app is called as the server span's child.
    sent = backend.requests[-1]
    assert sent.header("x-b3-traceid") == outbound.trace
    assert sent.header("x-b3-spanid") == inbound.span
    assert sent.header("x-b3-parentspanid") == outbound.span
    assert sent.header("traceparent") == f"00-{outbound.trace}-{inbound.span}-01"
    assert outbound.name == inbound.name == "reviews.default.svc.cluster.local:9080/*"
    assert (outbound.service, inbound.service) == ("productpage.default", "reviews.default")
    tags = outbound.tags
    assert tags["component"] == "proxy"
    assert tags["http.method"] == "GET" and tags["http.status_code"] == "200"
    assert tags["http.url"] == "http://reviews:9080/reviews/1"
    assert tags["upstream_cluster"] == "outbound|9080||reviews.default.svc.cluster.local"
    assert tags["response_flags"] == "-" and tags["peer.address"] == "127.0.0.1"
    assert (
        tags["node_id"].startswith("sidecar~") and tags["istio.canonical_service"] == "productpage"
    )
    assert "error" not in tags
    assert (
        tags["guid:x-request-id"]
        == inbound.tags["guid:x-request-id"]
        == sent.header("x-request-id")
    )


async def test_a_5xx_marks_both_spans_as_errors(
    run_proxy: RunProxy, backend: Backend, receiver: SpanReceiver
) -> None:
    client, _ = await chain(run_proxy, backend, provider(receiver.zipkin_url))
    assert (await get(client, {"x-status": "503"})).status_code == 503
    for span in await spans_of(receiver, 2):
        assert span.tags["error"] == "true" and span.tags["http.status_code"] == "503"


async def test_an_incoming_traceparent_is_continued_and_exported_as_otlp(
    run_proxy: RunProxy, backend: Backend, receiver: SpanReceiver
) -> None:
    client, _ = await chain(run_proxy, backend, provider(receiver.otlp_url, "otlp"))
    traceparent = f"00-{TRACE}-{PARENT}-01"
    assert (await get(client, {"traceparent": traceparent})).status_code == 200
    outbound, inbound = by_kind(await spans_of(receiver, 2))
    assert outbound.trace == inbound.trace == TRACE
    assert outbound.parent == PARENT and inbound.parent == outbound.span
    assert outbound.service == "productpage.default" and outbound.tags["http.method"] == "GET"


@pytest.mark.parametrize(
    "headers",
    [
        {"x-b3-traceid": TRACE, "x-b3-spanid": PARENT, "x-b3-sampled": "1"},
        {"x-b3-traceid": TRACE[16:], "x-b3-spanid": PARENT},
        {"b3": f"{TRACE}-{PARENT}-1"},
    ],
    ids=["multi", "multi-64-bit", "single"],
)
async def test_b3_headers_are_continued(
    run_proxy: RunProxy, backend: Backend, receiver: SpanReceiver, headers: dict[str, str]
) -> None:
    client, _ = await chain(run_proxy, backend, provider(receiver.zipkin_url))
    assert (await get(client, headers)).status_code == 200
    outbound, inbound = by_kind(await spans_of(receiver, 2))
    assert outbound.trace == inbound.trace
    assert outbound.trace.endswith(headers.get("x-b3-traceid", TRACE))
    assert outbound.parent == PARENT and inbound.parent == outbound.span
    sent = backend.requests[-1]
    assert sent.header("x-b3-spanid") == inbound.span
    if "b3" in headers:
        assert sent.header("b3") == f"{TRACE}-{inbound.span}-1-{outbound.span}"


@pytest.mark.parametrize(
    "headers",
    [{"x-b3-traceid": TRACE, "x-b3-spanid": PARENT, "x-b3-sampled": "0"}, {"b3": "0"},
     {"traceparent": f"00-{TRACE}-{PARENT}-00"}],
    ids=["b3-multi", "b3-single", "traceparent"],
)  # fmt: skip
async def test_a_caller_that_says_not_sampled_is_not_traced_by_any_proxy(
    run_proxy: RunProxy, backend: Backend, receiver: SpanReceiver, headers: dict[str, str]
) -> None:
    client, server = await chain(run_proxy, backend, provider(receiver.zipkin_url))
    assert (await get(client, headers)).status_code == 200
    assert backend.requests[-1].header("x-b3-sampled") == "0"
    for proxy in (client, server):
        assert proxy.proxy.spans is not None and proxy.proxy.spans.spans == []
        assert proxy.proxy.exporter is not None
        await proxy.proxy.exporter.flush()
    assert receiver.spans == []


async def test_sampling_0_percent_emits_nothing_and_100_percent_everything(
    run_proxy: RunProxy, backend: Backend, receiver: SpanReceiver
) -> None:
    never, _ = await chain(run_proxy, backend, provider(receiver.zipkin_url), sampling=0.0)
    for _ in range(20):
        assert (await get(never)).status_code == 200
    assert backend.requests[-1].header("x-b3-sampled") == "0"
    # Not sampled, still traced for whoever logs ids: each request a trace of its own, the
    # decision in both header families, the app's parent the inbound proxy's span.
    parents = [request.header("traceparent") for request in backend.requests[-20:]]
    assert all(p.startswith("00-") and p.endswith("-00") and len(p) == 55 for p in parents)
    assert len({p.split("-")[1] for p in parents}) == 20
    last = backend.requests[-1]
    assert last.header("x-b3-traceid") == parents[-1].split("-")[1]
    assert last.header("x-b3-spanid") == parents[-1].split("-")[2]
    assert never.proxy.spans is not None and never.proxy.spans.spans == []
    always, _ = await chain(run_proxy, backend, provider(receiver.zipkin_url), sampling=100.0)
    for _ in range(20):
        assert (await get(always)).status_code == 200
    spans = await spans_of(receiver, 40)
    assert len({span.trace for span in spans}) == 20
    assert len(spans) == 40 and {span.kind for span in spans} == {"CLIENT", "SERVER"}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def metric(running: Running, name: str) -> float:
    async with httpx.AsyncClient(timeout=5.0) as http:
        text = (await http.get(f"http://127.0.0.1:{running.admin.port}/stats/prometheus")).text
    values = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(values[0]) if values else 0.0


async def test_with_the_backend_down_requests_flow_and_lost_spans_are_counted(
    run_proxy: RunProxy, backend: Backend
) -> None:
    down = provider(
        f"http://127.0.0.1:{closed_port()}/api/v2/spans",
        max_buffered_spans=4, batch_size=2, flush_interval=0.5,
    )  # fmt: skip
    client, _ = await chain(run_proxy, backend, down)
    for _ in range(30):
        assert (await get(client)).status_code == 200
    assert await metric(client, SPANS_DROPPED) > 0

    async def counted() -> bool:
        return await metric(client, SPANS_FAILED) > 0

    await eventually_async(counted)
    assert await metric(client, SPANS_SENT) == 0
    assert client.proxy.spans is not None and len(client.proxy.spans.spans) <= 4


async def test_a_slow_backend_never_holds_requests_and_what_does_not_fit_is_dropped(
    run_proxy: RunProxy, backend: Backend, receiver: SpanReceiver
) -> None:
    receiver.delay = 3.0
    slow = provider(receiver.zipkin_url, max_buffered_spans=4, batch_size=2, timeout=0.3)
    client, server = await chain(run_proxy, backend, slow)
    started = time.monotonic()
    for _ in range(40):
        assert (await get(client)).status_code == 200
    assert time.monotonic() - started < receiver.delay, "requests waited for the exporter"
    for proxy in (client, server):
        assert proxy.proxy.spans is not None
        assert proxy.proxy.spans.dropped >= 20, "a POST in flight holds no more than a batch"
        assert await metric(proxy, SPANS_DROPPED) == proxy.proxy.spans.dropped

    async def timed_out() -> bool:
        return await metric(client, SPANS_FAILED) > 0

    await eventually_async(timed_out)
    receiver.delay = 0.0

    async def recovered() -> bool:
        return await metric(client, SPANS_SENT) > 0

    await eventually_async(recovered)
