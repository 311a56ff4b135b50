"""Tracing on by default under `gossamer up`: unless the manifests say anything about tracing
(a `Telemetry` or a `TelemetryProvider`), every proxy sends its spans to the control plane's
built-in receiver, sampling every request. A mesh on one host is small and the span store is
bounded, so 100 % costs little and makes `gossamer trace` useful at once; a mesh under load
takes a `Telemetry` with a lower `randomSamplingPercentage`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gossamer.resources import Resource
from gossamer.resources.loader import load_text

PROVIDER = "gossamer-builtin"
RECEIVER_PATH = "/telemetry/v1/zipkin/spans"
DEFAULT_SAMPLING = 100.0
_TRACING_KINDS = frozenset({"Telemetry", "TelemetryProvider"})

_MANIFESTS = """
apiVersion: gossamer.dev/v1alpha1
kind: TelemetryProvider
metadata:
  name: {provider}
  namespace: istio-system
spec:
  zipkin:
    url: {url}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  tracing:
  - providers:
    - name: {provider}
    randomSamplingPercentage: {sampling}
"""


def builtin_tracing(
    resources: Sequence[Resource], control_plane_url: str, sampling: float = DEFAULT_SAMPLING
) -> list[tuple[Resource, Mapping[str, Any]]]:
    """The resources that point tracing at the built-in receiver, or none when the manifests
    configure tracing themselves."""
    if any(resource.kind in _TRACING_KINDS for resource in resources):
        return []
    text = _MANIFESTS.format(
        provider=PROVIDER, url=control_plane_url + RECEIVER_PATH, sampling=sampling
    )
    loaded = load_text(text, "<built-in tracing>")
    assert not loaded.problems, loaded.problems
    return [(item.resource, item.document.data) for item in loaded.resources]
