"""Kubernetes Gateway API (gateway.networking.k8s.io): GatewayClass, Gateway, ReferenceGrant.

Every field of the v1 reference loads, experimental ones included; the routes that attach to a
Gateway are in gateway_api_routes.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from gossamer.resources.base import Finding, Labels, Model, Port, Resource, ranged
from gossamer.resources.kinds.apps import LabelSelector

GROUP = "gateway.networking.k8s.io"
STABLE_VERSIONS = ("v1", "v1beta1")
# Controllers whose Gateways the mesh's ingress gateway serves (docs/gateway-api.md).
SERVED_CONTROLLERS = frozenset({"istio.io/gateway-controller", "gossamer.dev/gateway-controller"})
# GatewayClasses served even when the files do not define them, as Istio installs `istio`.
SERVED_CLASSES = frozenset({"istio", "gossamer"})
# Protocols the ingress gateway serves a listener of.
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTPS"})

Weight = Annotated[int, ranged(0, 1_000_000)]


class ParentReference(Model):
    """What a route attaches to: a Gateway (and a listener of it), or a Service (GAMMA)."""

    group: str | None = None
    kind: str | None = None
    namespace: str | None = None
    name: str
    section_name: str | None = None
    port: Port | None = None

    @property
    def is_service(self) -> bool:
        """Whether it names a Service (mesh routing) rather than a Gateway."""
        return self.kind == "Service" and self.group in (None, "", "core")

    @property
    def is_gateway(self) -> bool:
        """Whether it names a Gateway (the default kind)."""
        return (self.kind or "Gateway") == "Gateway" and (self.group or GROUP) == GROUP


class LocalObjectReference(Model):
    """An object in the route's own namespace, e.g. an extension filter."""

    group: str
    kind: str
    name: str


class SecretObjectReference(Model):
    """A Secret (by default) holding a listener's certificate."""

    group: str | None = None
    kind: str | None = None
    name: str
    namespace: str | None = None


class ObjectReference(Model):
    """An object by group, kind, name and namespace."""

    group: str
    kind: str
    name: str
    namespace: str | None = None


class BackendObjectReference(Model):
    """Where requests go: a Service (by default) and its port."""

    group: str | None = None
    kind: str | None = None
    name: str
    namespace: str | None = None
    port: Port | None = None

    @property
    def is_service(self) -> bool:
        """Whether it names a Kubernetes Service, the only backend kind Gossamer routes to."""
        return (self.kind or "Service") == "Service" and self.group in (None, "", "core")


class BackendRef(BackendObjectReference):
    """A backend and its share of the traffic (weight 1 by default)."""

    weight: Weight | None = None


class GatewayClassParametersReference(Model):
    """Controller-specific parameters of a GatewayClass (kept)."""

    group: str
    kind: str
    name: str
    namespace: str | None = None


class GatewayClassSpec(Model):
    """Which controller serves the Gateways of this class."""

    controller_name: str
    parameters_ref: GatewayClassParametersReference | None = None
    description: str | None = None


class GatewayClass(Resource):
    """`gateway.networking.k8s.io` GatewayClass: a kind of Gateway and the controller for it."""

    GROUP: ClassVar[str] = GROUP
    KIND: ClassVar[str] = "GatewayClass"
    PLURAL: ClassVar[str] = "gatewayclasses"
    VERSIONS: ClassVar[tuple[str, ...]] = STABLE_VERSIONS

    spec: GatewayClassSpec

    @property
    def served(self) -> bool:
        """Whether the mesh's ingress gateway is the controller of this class."""
        return self.spec.controller_name in SERVED_CONTROLLERS


class RouteNamespaces(Model):
    """Which namespaces' routes a listener takes: Same (default), All, or Selector."""

    from_: Literal["All", "Same", "Selector", "None"] | None = Field(default=None, alias="from")
    selector: LabelSelector | None = None


class RouteGroupKind(Model):
    """A route kind a listener takes."""

    group: str | None = None
    kind: str


class AllowedRoutes(Model):
    """The routes a listener takes, by namespace and kind."""

    namespaces: RouteNamespaces | None = None
    kinds: list[RouteGroupKind] = Field(default_factory=list)


class ListenerTLSConfig(Model):
    """How a listener does TLS: Terminate (with certificates) or Passthrough."""

    mode: Literal["Terminate", "Passthrough"] | None = None
    certificate_refs: list[SecretObjectReference] = Field(default_factory=list)
    options: Labels = Field(default_factory=dict)


class Listener(Model):
    """A port, protocol and hostname where the Gateway accepts traffic."""

    name: str
    hostname: str | None = None
    port: Port
    protocol: str
    tls: ListenerTLSConfig | None = None
    allowed_routes: AllowedRoutes | None = None


class GatewaySpecAddress(Model):
    """An address the Gateway is asked to have (kept)."""

    type: str | None = None
    value: str | None = None


class LocalParametersReference(Model):
    """Infrastructure parameters in the Gateway's namespace (kept)."""

    group: str
    kind: str
    name: str


class GatewayInfrastructure(Model):
    """Labels, annotations and parameters for what implements the Gateway (kept)."""

    labels: Labels = Field(default_factory=dict)
    annotations: Labels = Field(default_factory=dict)
    parameters_ref: LocalParametersReference | None = None


class ListenerNamespaces(Model):
    """Which namespaces may attach ListenerSets to this Gateway."""

    from_: Literal["All", "Same", "Selector", "None"] | None = Field(default=None, alias="from")
    selector: LabelSelector | None = None


class AllowedListeners(Model):
    """ListenerSets this Gateway takes (kept)."""

    namespaces: ListenerNamespaces | None = None


class GatewayBackendTLS(Model):
    """The client certificate the Gateway presents to backends (kept)."""

    client_certificate_ref: SecretObjectReference | None = None


class FrontendTLSValidation(Model):
    """Client certificate validation at the Gateway (kept)."""

    ca_certificate_refs: list[ObjectReference]
    mode: str | None = None


class TLSConfig(Model):
    """Frontend TLS settings (kept)."""

    validation: FrontendTLSValidation | None = None


class TLSPortConfig(Model):
    """Frontend TLS settings of one port (kept)."""

    port: Port
    tls: TLSConfig


class FrontendTLSConfig(Model):
    """Frontend TLS settings, by default and per port (kept)."""

    default: TLSConfig
    per_port: list[TLSPortConfig] = Field(default_factory=list)


class GatewayTLSConfig(Model):
    """Gateway-wide TLS settings (kept)."""

    backend: GatewayBackendTLS | None = None
    frontend: FrontendTLSConfig | None = None


class GatewaySpec(Model):
    """Gateway spec, every field of the v1 reference."""

    gateway_class_name: str
    listeners: list[Listener]
    addresses: list[GatewaySpecAddress] = Field(default_factory=list)
    infrastructure: GatewayInfrastructure | None = None
    allowed_listeners: AllowedListeners | None = None
    tls: GatewayTLSConfig | None = None
    default_scope: str | None = None


class Gateway(Resource):
    """`gateway.networking.k8s.io` Gateway: listeners that routes attach to."""

    GROUP: ClassVar[str] = GROUP
    KIND: ClassVar[str] = "Gateway"
    PLURAL: ClassVar[str] = "gateways"
    VERSIONS: ClassVar[tuple[str, ...]] = STABLE_VERSIONS

    spec: GatewaySpec

    def check(self) -> Iterator[Finding]:
        """Listener names are unique; HTTPS terminates with a certificate; HTTP has no tls."""
        seen: dict[str, int] = {}
        for index, listener in enumerate(self.spec.listeners):
            path = ("spec", "listeners", index)
            if listener.name in seen:
                yield Finding(
                    (*path, "name"),
                    f"listener {listener.name} is already spec.listeners[{seen[listener.name]}]",
                )
            seen.setdefault(listener.name, index)
            if listener.protocol == "HTTP" and listener.tls is not None:
                yield Finding((*path, "tls"), "an HTTP listener takes no tls; use HTTPS")
            if listener.protocol == "HTTPS":
                tls = listener.tls
                if tls is None or not tls.certificate_refs:
                    yield Finding((*path, "tls"), "an HTTPS listener needs tls.certificateRefs")
                elif tls.mode == "Passthrough":
                    yield Finding((*path, "tls", "mode"), "an HTTPS listener terminates TLS")


class ReferenceGrantFrom(Model):
    """Objects that may refer: their group, kind and namespace."""

    group: str
    kind: str
    namespace: str


class ReferenceGrantTo(Model):
    """Objects that may be referred to in the grant's namespace: group, kind, maybe one name."""

    group: str
    kind: str
    name: str | None = None


class ReferenceGrantSpec(Model):
    """Who may refer to what in this namespace."""

    from_: list[ReferenceGrantFrom] = Field(alias="from")
    to: list[ReferenceGrantTo]


class ReferenceGrant(Resource):
    """`gateway.networking.k8s.io` ReferenceGrant: lets other namespaces refer to objects here."""

    GROUP: ClassVar[str] = GROUP
    KIND: ClassVar[str] = "ReferenceGrant"
    PLURAL: ClassVar[str] = "referencegrants"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1", "v1beta1", "v1alpha2")

    spec: ReferenceGrantSpec

    def grants(self, source: tuple[str, str, str], target: tuple[str, str, str]) -> bool:
        """Whether (group, kind, namespace) `source` may refer to (group, kind, name) `target`."""
        group, kind, name = target
        return any((f.group, f.kind, f.namespace) == source for f in self.spec.from_) and any(
            (t.group, t.kind) == (group, kind) and t.name in (None, name) for t in self.spec.to
        )
