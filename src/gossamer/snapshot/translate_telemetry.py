"""Telemetry and TelemetryProvider resources to one proxy's tracing and access log settings.

As Istio resolves Telemetry: the mesh's (in the root namespace, without a selector), then the
workload's namespace's (without a selector), then those whose selector picks the workload; each
field a more specific one sets overrides the less specific one's. A Telemetry that names no
provider uses the only TelemetryProvider there is (Istio's default provider), if there is one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gossamer.resources import Resource
from gossamer.resources.kinds.telemetry import Telemetry as TelemetryResource
from gossamer.resources.kinds.telemetry import TelemetryProvider
from gossamer.snapshot.durations import seconds
from gossamer.snapshot.model import Telemetry, Tracing, TracingProvider
from gossamer.snapshot.translate_catalog import ROOT_NAMESPACE, labels_match

DEFAULT_SAMPLING = 1.0
"""Percent of new traces sampled when no Telemetry says (Istio's mesh default)."""


def is_telemetry(resource: Resource) -> bool:
    """Whether `telemetry_for` reads this resource."""
    return isinstance(resource, TelemetryResource | TelemetryProvider)


def telemetry_for(
    resources: Iterable[Resource],
    namespace: str,
    labels: Mapping[str, str],
    *,
    root_namespace: str = ROOT_NAMESPACE,
) -> Telemetry:
    """The telemetry settings of a workload in `namespace` with these pod labels."""
    telemetries: list[TelemetryResource] = []
    providers: dict[str, TelemetryProvider] = {}
    for resource in resources:
        if isinstance(resource, TelemetryResource):
            telemetries.append(resource)
        elif isinstance(resource, TelemetryProvider):
            providers.setdefault(resource.name, resource)
    applying = _applying(telemetries, namespace, labels, root_namespace)
    tracing = _tracing(applying, providers)
    return Telemetry(access_log=_access_log(applying), tracing=tracing)


def _access_log(applying: list[TelemetryResource]) -> bool:
    """On when the most specific Telemetry with `accessLogging` does not disable it."""
    enabled = False
    for telemetry in applying:
        if telemetry.spec.access_logging:
            enabled = not telemetry.spec.access_logging[0].disabled
    return enabled


def _tracing(
    applying: list[TelemetryResource], providers: Mapping[str, TelemetryProvider]
) -> Tracing | None:
    entries = [telemetry.spec.tracing[0] for telemetry in applying if telemetry.spec.tracing]
    if not entries:
        return None
    sampling = DEFAULT_SAMPLING
    provider_name: str | None = None
    disabled = False
    for entry in entries:
        if entry.random_sampling_percentage is not None:
            sampling = entry.random_sampling_percentage
        if entry.providers:
            provider_name = entry.providers[0].name
        if entry.disable_span_reporting is not None:
            disabled = entry.disable_span_reporting
    if provider_name is None and len(providers) == 1:
        provider_name = next(iter(providers))
    found = providers.get(provider_name) if provider_name is not None else None
    provider = provider_settings(found) if found is not None and not disabled else None
    return Tracing(sampling=float(sampling), provider=provider)


def _applying(
    telemetries: list[TelemetryResource],
    namespace: str,
    labels: Mapping[str, str],
    root_namespace: str,
) -> list[TelemetryResource]:
    """The Telemetry resources that apply, least specific first (by name within a level)."""
    ordered = sorted(telemetries, key=lambda telemetry: telemetry.name)
    mesh = [t for t in ordered if t.namespace == root_namespace and t.spec.selector is None]
    spaced = [
        t
        for t in ordered
        if t.namespace == namespace and namespace != root_namespace and t.spec.selector is None
    ]
    workload = [
        t
        for t in ordered
        if t.namespace == namespace
        and t.spec.selector is not None
        and labels_match(t.spec.selector.match_labels, labels)
    ]
    return [*mesh, *spaced, *workload]


def provider_settings(provider: TelemetryProvider) -> TracingProvider:
    """A TelemetryProvider as the snapshot carries it."""
    spec = provider.spec
    exporter = spec.zipkin or spec.opentelemetry
    assert exporter is not None, "validation requires zipkin or opentelemetry"
    return TracingProvider(
        name=provider.name,
        format="zipkin" if spec.zipkin is not None else "otlp",
        url=exporter.url,
        batch_size=spec.batch_size,
        flush_interval=seconds(spec.flush_interval),
        timeout=seconds(spec.timeout),
        max_buffered_spans=spec.max_buffered_spans,
    )
