"""Telemetry and TelemetryProvider resources to one workload's tracing: scope, precedence, checks."""

from __future__ import annotations

from gossamer.resources import load_text
from gossamer.snapshot import Tracing, TracingProvider
from gossamer.snapshot.translate_telemetry import DEFAULT_SAMPLING, telemetry_for

from .test_translate_security import resources

PROVIDERS = """
apiVersion: gossamer.dev/v1alpha1
kind: TelemetryProvider
metadata: {name: zipkin, namespace: istio-system}
spec:
  zipkin: {url: "http://127.0.0.1:9411/api/v2/spans"}
  flushInterval: 200ms
  maxBufferedSpans: 1000
---
apiVersion: gossamer.dev/v1alpha1
kind: TelemetryProvider
metadata: {name: otel, namespace: istio-system}
spec:
  opentelemetry: {url: "http://collector:4318/v1/traces"}
  batchSize: 64
"""
MESH = """
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - providers: [{name: zipkin}]
    randomSamplingPercentage: 10
"""
ZIPKIN = TracingProvider(
    name="zipkin",
    format="zipkin",
    url="http://127.0.0.1:9411/api/v2/spans",
    flush_interval=0.2,
    max_buffered_spans=1000,
)


def test_without_telemetry_tracing_is_off() -> None:
    assert telemetry_for(resources(PROVIDERS), "default", {}).tracing is None


def test_the_mesh_telemetry_applies_to_every_namespace() -> None:
    tracing = telemetry_for(resources(PROVIDERS + MESH), "shop", {"app": "cart"}).tracing
    assert tracing == Tracing(sampling=10.0, provider=ZIPKIN)


def test_a_namespace_then_a_workload_override_field_by_field() -> None:
    text = (
        PROVIDERS
        + MESH
        + """
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: shop, namespace: shop}
spec:
  tracing: [{providers: [{name: otel}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: cart, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  tracing: [{randomSamplingPercentage: 100}]
"""
    )
    found = resources(text)
    cart = telemetry_for(found, "shop", {"app": "cart"}).tracing
    assert cart is not None and cart.sampling == 100.0
    assert cart.provider is not None and cart.provider.format == "otlp"
    assert cart.provider.batch_size == 64
    other = telemetry_for(found, "shop", {"app": "other"}).tracing
    assert other is not None and other.sampling == 10.0
    assert telemetry_for(found, "default", {"app": "cart"}).tracing == Tracing(10.0, ZIPKIN)


def test_no_provider_named_takes_the_only_one_and_reporting_can_be_disabled() -> None:
    only = PROVIDERS.split("---", maxsplit=1)[0]
    text = (
        only
        + """
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing: [{}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: quiet, namespace: batch}
spec:
  tracing: [{disableSpanReporting: true}]
"""
    )
    found = resources(text)
    assert telemetry_for(found, "default", {}).tracing == Tracing(DEFAULT_SAMPLING, ZIPKIN)
    assert telemetry_for(found, "batch", {}).tracing == Tracing(DEFAULT_SAMPLING, None)


def test_a_provider_needs_exactly_one_backend_and_a_url() -> None:
    result = load_text(
        """
apiVersion: gossamer.dev/v1alpha1
kind: TelemetryProvider
metadata: {name: both}
spec:
  zipkin: {url: "http://a:9411/api/v2/spans"}
  opentelemetry: {url: "ftp://b/v1/traces"}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: wide}
spec:
  tracing: [{randomSamplingPercentage: 150}]
""",
        "test.yaml",
    )
    messages = " | ".join(problem.message for problem in result.problems)
    assert "http:// or https:// URL" in messages
    assert "between 0 and 100" in messages


def test_access_logs_are_on_where_a_telemetry_asks_and_off_where_a_closer_one_disables() -> None:
    text = """
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: envoy}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: quiet, namespace: batch}
spec:
  accessLogging: [{disabled: true}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: loud-jobs, namespace: batch}
spec:
  selector: {matchLabels: {app: jobs}}
  accessLogging: [{}]
"""
    found = resources(text)
    assert telemetry_for(found, "default", {"app": "web"}).access_log
    assert not telemetry_for(found, "batch", {"app": "cron"}).access_log
    assert telemetry_for(found, "batch", {"app": "jobs"}).access_log
    assert not telemetry_for(resources(PROVIDERS + MESH), "default", {}).access_log


def test_access_logs_go_only_to_the_built_in_provider() -> None:
    result = load_text(
        """
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: shipped}
spec:
  accessLogging: [{providers: [{name: otel-als}]}]
""",
        "test.yaml",
    )
    [problem] = result.problems
    assert "built-in provider only" in problem.message
    assert "otel-als" in problem.message
    assert problem.line == 6
