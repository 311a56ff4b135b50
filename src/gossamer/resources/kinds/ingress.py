"""Kubernetes Ingress: `networking.k8s.io/v1` and the older `extensions/v1beta1` form."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field

from gossamer.resources.base import Finding, IntOrString, Model, Port, Resource
from gossamer.resources.yamlsource import FieldPath

PathType = Literal["Exact", "Prefix", "ImplementationSpecific"]


class TypedLocalObjectReference(Model):
    """A backend that is not a Service (kept; Gossamer routes to Services only)."""

    api_group: str | None = None
    kind: str
    name: str


class ServiceBackendPort(Model):
    """A Service port by name or by number."""

    name: str | None = None
    number: Port | None = None


class IngressServiceBackend(Model):
    """v1: the Service a path goes to."""

    name: str
    port: ServiceBackendPort


class IngressBackend(Model):
    """v1: a backend, a Service or another resource."""

    service: IngressServiceBackend | None = None
    resource: TypedLocalObjectReference | None = None


class HTTPIngressPath(Model):
    """v1: a path and where it goes."""

    path: str | None = None
    path_type: PathType
    backend: IngressBackend


class HTTPIngressRuleValue(Model):
    """The HTTP paths of one rule."""

    paths: list[HTTPIngressPath]


class IngressRule(Model):
    """v1: a host (or every host) and its paths."""

    host: str | None = None
    http: HTTPIngressRuleValue | None = None


class IngressTLS(Model):
    """Hosts served over TLS with the certificate in a secret."""

    hosts: list[str] = Field(default_factory=list)
    secret_name: str | None = None


class IngressSpec(Model):
    """v1 IngressSpec, every field."""

    ingress_class_name: str | None = None
    default_backend: IngressBackend | None = None
    tls: list[IngressTLS] = Field(default_factory=list)
    rules: list[IngressRule] = Field(default_factory=list)


class BackendV1Beta1(Model):
    """v1beta1: serviceName and servicePort, or a resource."""

    service_name: str | None = None
    service_port: IntOrString | None = None
    resource: TypedLocalObjectReference | None = None


class HTTPIngressPathV1Beta1(Model):
    """v1beta1: a path (pathType optional) and its backend."""

    path: str | None = None
    path_type: PathType | None = None
    backend: BackendV1Beta1


class HTTPIngressRuleValueV1Beta1(Model):
    """v1beta1: the HTTP paths of one rule."""

    paths: list[HTTPIngressPathV1Beta1]


class IngressRuleV1Beta1(Model):
    """v1beta1: a host (or every host) and its paths."""

    host: str | None = None
    http: HTTPIngressRuleValueV1Beta1 | None = None


class IngressSpecV1Beta1(Model):
    """v1beta1 IngressSpec, every field."""

    ingress_class_name: str | None = None
    backend: BackendV1Beta1 | None = None
    tls: list[IngressTLS] = Field(default_factory=list)
    rules: list[IngressRuleV1Beta1] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class IngressRoute:
    """One path of an Ingress in a form common to both versions, for checks and translation."""

    path: FieldPath
    host: str | None
    http_path: str | None
    path_type: str
    service: str | None
    port: int | str | None


class Ingress(Resource):
    """`networking.k8s.io/v1` Ingress."""

    GROUP: ClassVar[str] = "networking.k8s.io"
    KIND: ClassVar[str] = "Ingress"
    PLURAL: ClassVar[str] = "ingresses"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    spec: IngressSpec = Field(default_factory=IngressSpec)

    def routes(self) -> Iterator[IngressRoute]:
        """Every path rule and the default backend, as (host, path, service, port)."""
        default = self.spec.default_backend
        if default is not None and default.service is not None:
            port = default.service.port
            yield IngressRoute(
                ("spec", "defaultBackend"),
                None,
                None,
                "Prefix",
                default.service.name,
                _port_of(port),
            )
        for r, rule in enumerate(self.spec.rules):
            for p, entry in enumerate(rule.http.paths if rule.http else []):
                service = entry.backend.service
                backend_port = service.port if service else None
                yield IngressRoute(
                    ("spec", "rules", r, "http", "paths", p, "backend"),
                    rule.host,
                    entry.path,
                    entry.path_type,
                    service.name if service else None,
                    _port_of(backend_port),
                )

    def check(self) -> Iterator[Finding]:
        """A backend names a Service or a resource, and a port by name or number, not both."""
        yield from _check_paths(self.routes())
        default = self.spec.default_backend
        if default is not None:
            yield from _check_backend(default, ("spec", "defaultBackend"))
        for r, rule in enumerate(self.spec.rules):
            for p, entry in enumerate(rule.http.paths if rule.http else []):
                yield from _check_backend(
                    entry.backend, ("spec", "rules", r, "http", "paths", p, "backend")
                )


class IngressV1Beta1(Resource):
    """`extensions/v1beta1` and `networking.k8s.io/v1beta1` Ingress, as older manifests write it."""

    GROUP: ClassVar[str] = "extensions"
    KIND: ClassVar[str] = "Ingress"
    PLURAL: ClassVar[str] = "ingresses"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1beta1",)

    spec: IngressSpecV1Beta1 = Field(default_factory=IngressSpecV1Beta1)

    def routes(self) -> Iterator[IngressRoute]:
        """Every path rule and the default backend, as (host, path, service, port)."""
        if self.spec.backend is not None:
            yield IngressRoute(
                ("spec", "backend"),
                None,
                None,
                "Prefix",
                self.spec.backend.service_name,
                self.spec.backend.service_port,
            )
        for r, rule in enumerate(self.spec.rules):
            for p, entry in enumerate(rule.http.paths if rule.http else []):
                yield IngressRoute(
                    ("spec", "rules", r, "http", "paths", p, "backend"),
                    rule.host,
                    entry.path,
                    entry.path_type or "ImplementationSpecific",
                    entry.backend.service_name,
                    entry.backend.service_port,
                )

    def check(self) -> Iterator[Finding]:
        """A backend names serviceName with servicePort, or a resource."""
        yield from _check_paths(self.routes())
        backends: list[tuple[FieldPath, BackendV1Beta1]] = []
        if self.spec.backend is not None:
            backends.append((("spec", "backend"), self.spec.backend))
        for r, rule in enumerate(self.spec.rules):
            for p, entry in enumerate(rule.http.paths if rule.http else []):
                backends.append(
                    (("spec", "rules", r, "http", "paths", p, "backend"), entry.backend)
                )
        for path, backend in backends:
            if backend.resource is None and (
                backend.service_name is None or backend.service_port is None
            ):
                yield Finding(path, "needs serviceName and servicePort, or resource")
            if backend.resource is not None and backend.service_name is not None:
                yield Finding(path, "names both a Service and a resource; choose one")


def _check_paths(routes: Iterator[IngressRoute]) -> Iterator[Finding]:
    for route in routes:
        if route.http_path is not None and not route.http_path.startswith("/"):
            yield Finding((*route.path[:-1], "path"), "must start with '/'")


def _check_backend(backend: IngressBackend, path: FieldPath) -> Iterator[Finding]:
    if (backend.service is None) == (backend.resource is None):
        yield Finding(path, "must name exactly one of service or resource")
    if backend.service is not None:
        port = backend.service.port
        if (port.name is None) == (port.number is None):
            yield Finding((*path, "service", "port"), "must give exactly one of name or number")


def _port_of(port: ServiceBackendPort | None) -> int | str | None:
    if port is None:
        return None
    return port.number if port.number is not None else port.name
