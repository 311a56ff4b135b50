"""`gossamer up` of examples/hello with tracing on: one request through the gateway is one
trace, gateway -> frontend -> greeter, although the hello apps forward no trace header (the
startup hook that `up` gives Python apps carries it)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..component.proxy.span_receiver import ReceivedSpan, SpanReceiver
from .test_up_hello import EXAMPLE, alive, gossamer

TRACING = """\
apiVersion: gossamer.dev/v1alpha1
kind: TelemetryProvider
metadata: {{name: zipkin, namespace: istio-system}}
spec:
  zipkin: {{url: "{url}"}}
  flushInterval: 50ms
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: mesh-default, namespace: istio-system}}
spec:
  tracing:
  - providers: [{{name: zipkin}}]
    randomSamplingPercentage: 100
"""


@pytest.fixture
def receiver() -> Iterator[SpanReceiver]:
    """A Zipkin receiver on its own event loop, in a thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    spans = SpanReceiver("zipkin")
    asyncio.run_coroutine_threadsafe(spans.start(), loop).result(10)
    yield spans
    asyncio.run_coroutine_threadsafe(spans.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.fixture
def traced_hello(tmp_path: Path, receiver: SpanReceiver) -> Iterator[Path]:
    folder = tmp_path / "hello"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns(".gossamer", "__pycache__"))
    (folder / "tracing.yaml").write_text(TRACING.format(url=receiver.zipkin_url))
    yield folder
    up_file = folder / ".gossamer" / "up.json"
    if up_file.exists():
        pid = json.loads(up_file.read_text())["pid"]
        if gossamer("down", cwd=folder).returncode != 0 and alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_one_request_is_one_trace_through_apps_that_forward_nothing(
    traced_hello: Path, receiver: SpanReceiver
) -> None:
    started = gossamer("up", ".", "--detach", cwd=traced_hello)
    assert started.returncode == 0, started.stdout + started.stderr
    gateway = json.loads((traced_hello / ".gossamer" / "up.json").read_text())["gateway"]

    answer = httpx.get(f"{gateway}/", params={"name": "one-trace"}, timeout=10)
    assert answer.status_code == 200, answer.text

    def trace_of_the_request() -> list[ReceivedSpan]:
        edge = [s for s in receiver.spans if "one-trace" in s.tags.get("http.url", "")]
        if not edge:
            return []
        return [s for s in receiver.spans if s.trace == edge[0].trace]

    expected = {
        ("CLIENT", "istio-ingressgateway.istio-system"),
        ("SERVER", "frontend.default"),
        ("CLIENT", "frontend.default"),
        ("SERVER", "greeter.default"),
    }
    deadline = time.monotonic() + 20
    while not expected <= {(s.kind, s.service) for s in trace_of_the_request()}:
        assert time.monotonic() < deadline, [(s.kind, s.service, s.trace) for s in receiver.spans]
        time.sleep(0.05)
    assert not receiver.problems, receiver.problems

    trace = {(s.kind, s.service): s for s in trace_of_the_request()}
    edge = trace["CLIENT", "istio-ingressgateway.istio-system"]
    frontend_in = trace["SERVER", "frontend.default"]
    frontend_out = trace["CLIENT", "frontend.default"]
    greeter_in = trace["SERVER", "greeter.default"]
    # Parent links as Istio draws them: the app's call is a child of the request it handles.
    assert edge.parent is None
    assert frontend_in.parent == edge.span
    assert frontend_out.parent == frontend_in.span
    assert greeter_in.parent == frontend_out.span
    assert "greeter" in frontend_out.name

    stopped = gossamer("down", cwd=traced_hello)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
