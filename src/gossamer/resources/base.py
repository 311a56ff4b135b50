"""The building blocks of every kind: a strict model base, common field types, object metadata."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from gossamer.resources.problems import Severity
from gossamer.resources.yamlsource import FieldPath


class Model(BaseModel):
    """A part of a manifest: camelCase fields, no unknown field, no type coercion, immutable."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        hide_input_in_errors=True,
    )


def _check(predicate: Callable[[Any], bool], code: str, message: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not predicate(value):
            raise PydanticCustomError(code, message, {"value": value})
        return value

    return check


def ranged(low: int, high: int) -> AfterValidator:
    """An integer bound that reads `must be between LOW and HIGH` when broken."""
    return AfterValidator(
        _check(lambda v: low <= v <= high, "range", f"must be between {low} and {high}")
    )


def matching(pattern: str, what: str) -> AfterValidator:
    """A string format, named for the user, e.g. `must be a duration such as 1.5s`."""
    compiled = re.compile(pattern)
    return AfterValidator(
        _check(lambda v: bool(compiled.fullmatch(v)), "format", f"must be {what}")
    )


# Go-style durations as Istio and Kubernetes write them: 10s, 1.5s, 100ms, 1h30m.
_DURATION = r"(?:\d+(?:\.\d+)?(?:h|m|s|ms|us|µs|ns))+"
Duration = Annotated[str, matching(_DURATION, "a duration such as 1.5s, 100ms or 2m")]
Port = Annotated[int, ranged(1, 65535)]
Percentage = Annotated[
    float, AfterValidator(_check(lambda v: 0 <= v <= 100, "range", "must be between 0 and 100"))
]
NonNegative = Annotated[int, ranged(0, 2**31 - 1)]
Positive = Annotated[int, ranged(1, 2**31 - 1)]
UInt32 = Annotated[int, ranged(0, 2**32 - 1)]
IntOrString = int | str
Labels = dict[str, str]
# Parts that Gossamer recognises but keeps as given, without checking inside (e.g. volumes).
Opaque = Any

# RFC 1123 label and subdomain, as Kubernetes names its objects.
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_DNS_SUBDOMAIN = rf"(?=.{{1,253}}\Z){_DNS_LABEL}(\.{_DNS_LABEL})*"
DnsLabel = Annotated[
    str,
    matching(
        _DNS_LABEL,
        "a DNS label: at most 63 lowercase letters, digits and '-', starting and ending "
        "with a letter or digit",
    ),
]
DnsSubdomain = Annotated[
    str,
    matching(
        _DNS_SUBDOMAIN,
        "a DNS name: lowercase letters, digits, '-' and '.', at most 253 characters",
    ),
]


class OwnerReference(Model):
    """A pointer to the object that owns this one (kept; Gossamer does not collect garbage)."""

    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(Model):
    """Kubernetes object metadata: every field of the reference is recognised."""

    name: DnsSubdomain | None = None
    generate_name: str | None = None
    namespace: DnsLabel | None = None
    labels: Labels = Field(default_factory=dict)
    annotations: Labels = Field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    owner_references: list[OwnerReference] = Field(default_factory=list)
    finalizers: list[str] = Field(default_factory=list)
    managed_fields: list[Opaque] = Field(default_factory=list)
    self_link: str | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """A problem a kind finds in itself after its fields are typed, e.g. two ports alike."""

    path: FieldPath
    message: str
    severity: Severity = Severity.ERROR


class Resource(Model):
    """A whole object as a manifest writes it: apiVersion, kind, metadata, spec (and status)."""

    GROUP: ClassVar[str]
    KIND: ClassVar[str]
    PLURAL: ClassVar[str]
    VERSIONS: ClassVar[tuple[str, ...]]
    # Fields a manifest must name and that are never "not enforced": they identify the object.
    structural: ClassVar[frozenset[str]] = frozenset(
        {
            "apiVersion",
            "kind",
            "metadata",
            "metadata.name",
            "metadata.namespace",
            "metadata.labels",
            "metadata.annotations",
        }
    )

    api_version: str
    kind: str
    metadata: ObjectMeta
    # Written by a cluster, never acted on: accepted so that `kubectl get -o yaml` output loads.
    status: Opaque = None

    def check(self) -> Iterator[Finding]:
        """Rules that span several fields of this object; each kind adds its own."""
        return iter(())

    @property
    def name(self) -> str:
        """The object's name (validation guarantees one)."""
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        """The object's namespace, `default` when the manifest leaves it out."""
        return self.metadata.namespace or "default"


class WorkloadSelector(Model):
    """Istio's workload selector: `matchLabels`, with Kubernetes label semantics."""

    match_labels: Labels = Field(default_factory=dict)


class PolicyTargetReference(Model):
    """Istio's targetRef: a Gateway API object a policy attaches to."""

    group: str | None = None
    kind: str
    name: str
    namespace: str | None = None
