"""Tracing: Istio's `telemetry.istio.io` Telemetry (sampling and provider per mesh, namespace or
workload) and Gossamer's TelemetryProvider, which says where spans go.

Istio defines tracing providers in MeshConfig's `extensionProviders`, which is no Kubernetes
kind; Gossamer makes each one a `gossamer.dev/v1alpha1` TelemetryProvider that a Telemetry
names in `providers[].name`, the way it would name an extension provider.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, ClassVar

from pydantic import Field

from gossamer.resources.base import (
    Duration,
    Finding,
    Model,
    Percentage,
    Resource,
    WorkloadSelector,
    matching,
    ranged,
)
from gossamer.resources.kinds.gossamer_kinds import GOSSAMER_VERSIONS

TELEMETRY_VERSIONS = ("v1", "v1alpha1")
HttpUrl = Annotated[
    str, matching(r"https?://[^/\s:]+(:\d{1,5})?(/\S*)?", "an http:// or https:// URL")
]


class ProviderRef(Model):
    """A TelemetryProvider, by name."""

    name: str


class Tracing(Model):
    """Whether and how often requests are traced, and where their spans go."""

    providers: list[ProviderRef] = Field(default_factory=list)
    random_sampling_percentage: Percentage | None = None
    disable_span_reporting: bool | None = None


class AccessLogging(Model):
    """Whether the proxies write an access log entry per request (Istio's `accessLogging`)."""

    providers: list[ProviderRef] = Field(default_factory=list)
    disabled: bool | None = None


ACCESS_LOG_PROVIDERS = ("envoy", "gossamer")
"""The built-in access log providers: both write one JSON line per request to the proxy's
standard output (its log file under `gossamer up`), as Istio's `envoy` provider does."""


class TelemetrySpec(Model):
    """Istio Telemetry: tracing and access logs for the mesh (in istio-system), a namespace, or
    workloads."""

    selector: WorkloadSelector | None = None
    tracing: list[Tracing] = Field(default_factory=list)
    access_logging: list[AccessLogging] = Field(default_factory=list)


class Telemetry(Resource):
    """`telemetry.istio.io` Telemetry."""

    GROUP: ClassVar[str] = "telemetry.istio.io"
    KIND: ClassVar[str] = "Telemetry"
    PLURAL: ClassVar[str] = "telemetries"
    VERSIONS: ClassVar[tuple[str, ...]] = TELEMETRY_VERSIONS

    spec: TelemetrySpec = Field(default_factory=TelemetrySpec)

    def check(self) -> Iterator[Finding]:
        """One tracing entry, with at most one provider (as Istio applies them); access logs
        only to the built-in provider."""
        for index, logging in enumerate(self.spec.access_logging):
            if index > 0:
                yield Finding(
                    ("spec", "accessLogging", index),
                    "one accessLogging entry per Telemetry (match is not supported)",
                )
            for at, provider in enumerate(logging.providers):
                if provider.name not in ACCESS_LOG_PROVIDERS:
                    yield Finding(
                        ("spec", "accessLogging", index, "providers", at, "name"),
                        f"access logs go to the built-in provider only "
                        f"({' or '.join(ACCESS_LOG_PROVIDERS)}), not {provider.name!r}",
                    )
        if len(self.spec.tracing) > 1:
            yield Finding(
                ("spec", "tracing", 1), "one tracing entry per Telemetry (match is not supported)"
            )
        for index, entry in enumerate(self.spec.tracing):
            if len(entry.providers) > 1:
                yield Finding(
                    ("spec", "tracing", index, "providers", 1), "one tracing provider at a time"
                )


class Exporter(Model):
    """Where spans are POSTed."""

    url: HttpUrl


class TelemetryProviderSpec(Model):
    """A tracing backend (Zipkin v2 JSON or OTLP/HTTP JSON) and the exporter's bounds."""

    zipkin: Exporter | None = None
    opentelemetry: Exporter | None = None
    batch_size: Annotated[int, ranged(1, 100_000)] = 256
    flush_interval: Duration = "1s"
    timeout: Duration = "5s"
    max_buffered_spans: Annotated[int, ranged(1, 10_000_000)] = 4096


class TelemetryProvider(Resource):
    """`gossamer.dev/v1alpha1` TelemetryProvider: a tracing provider Telemetry names."""

    GROUP: ClassVar[str] = "gossamer.dev"
    KIND: ClassVar[str] = "TelemetryProvider"
    PLURAL: ClassVar[str] = "telemetryproviders"
    VERSIONS: ClassVar[tuple[str, ...]] = GOSSAMER_VERSIONS

    spec: TelemetryProviderSpec = Field(default_factory=TelemetryProviderSpec)

    def check(self) -> Iterator[Finding]:
        """Exactly one of zipkin and opentelemetry; a buffer that holds a batch."""
        if (self.spec.zipkin is None) == (self.spec.opentelemetry is None):
            yield Finding(("spec",), "needs exactly one of zipkin and opentelemetry")
        if self.spec.max_buffered_spans < self.spec.batch_size:
            yield Finding(("spec", "maxBufferedSpans"), "must hold at least one batch (batchSize)")
