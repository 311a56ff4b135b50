"""Gateway API routes: HTTPRoute (acted on), and GRPCRoute, TLSRoute, TCPRoute (kept)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, ClassVar, Literal

from pydantic import Field
from pydantic.alias_generators import to_camel

from gossamer.resources.base import Duration, Finding, Model, Port, Resource, ranged
from gossamer.resources.kinds.gateway_api import (
    GROUP,
    STABLE_VERSIONS,
    BackendObjectReference,
    BackendRef,
    LocalObjectReference,
    ParentReference,
)
from gossamer.resources.yamlsource import FieldPath

PathMatchType = Literal["Exact", "PathPrefix", "RegularExpression"]
ValueMatchType = Literal["Exact", "RegularExpression"]
FilterType = Literal[
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "RequestRedirect",
    "URLRewrite",
    "CORS",
    "ExternalAuth",
    "ExtensionRef",
]
# The attribute of a filter each type reads (its YAML field is the camelCase of it).
FILTER_ATTRIBUTES: dict[str, str] = {
    "RequestHeaderModifier": "request_header_modifier",
    "ResponseHeaderModifier": "response_header_modifier",
    "RequestMirror": "request_mirror",
    "RequestRedirect": "request_redirect",
    "URLRewrite": "url_rewrite",
    "CORS": "cors",
    "ExternalAuth": "external_auth",
    "ExtensionRef": "extension_ref",
}


class HTTPPathMatch(Model):
    """A path match: PathPrefix `/` unless told otherwise."""

    type: PathMatchType | None = None
    value: str | None = None


class HTTPHeaderMatch(Model):
    """A header (case-insensitive name) with a value, Exact unless told otherwise."""

    type: ValueMatchType | None = None
    name: str
    value: str


class HTTPQueryParamMatch(Model):
    """A query parameter (case-sensitive name) with a value, Exact unless told otherwise."""

    type: ValueMatchType | None = None
    name: str
    value: str


class HTTPRouteMatch(Model):
    """Conditions that must all hold: path, headers, query parameters, method."""

    path: HTTPPathMatch | None = None
    headers: list[HTTPHeaderMatch] = Field(default_factory=list)
    query_params: list[HTTPQueryParamMatch] = Field(default_factory=list)
    method: str | None = None


class HTTPHeader(Model):
    """A header name and value."""

    name: str
    value: str


class HTTPHeaderFilter(Model):
    """Headers to set, add and remove."""

    set: list[HTTPHeader] = Field(default_factory=list)
    add: list[HTTPHeader] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


class HTTPPathModifier(Model):
    """A new path: the whole of it, or in place of the matched prefix."""

    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    replace_full_path: str | None = None
    replace_prefix_match: str | None = None


class HTTPRequestRedirectFilter(Model):
    """Answer with a redirect: scheme, hostname, path, port and status (302 by default)."""

    scheme: Literal["http", "https"] | None = None
    hostname: str | None = None
    path: HTTPPathModifier | None = None
    port: Port | None = None
    status_code: Literal[301, 302, 303, 307, 308] | None = None


class HTTPURLRewriteFilter(Model):
    """Change the hostname and path before forwarding."""

    hostname: str | None = None
    path: HTTPPathModifier | None = None


class Fraction(Model):
    """numerator / denominator (100 by default)."""

    numerator: Annotated[int, ranged(0, 2**31 - 1)]
    denominator: Annotated[int, ranged(1, 2**31 - 1)] | None = None


class HTTPRequestMirrorFilter(Model):
    """Copy requests to another backend, all of them or a share."""

    backend_ref: BackendObjectReference
    percent: Annotated[int, ranged(0, 100)] | None = None
    fraction: Fraction | None = None


class HTTPCORSFilter(Model):
    """Cross-origin answers for browsers."""

    allow_origins: list[str] = Field(default_factory=list)
    allow_credentials: bool | None = None
    allow_methods: list[str] = Field(default_factory=list)
    allow_headers: list[str] = Field(default_factory=list)
    expose_headers: list[str] = Field(default_factory=list)
    max_age: Annotated[int, ranged(1, 2**31 - 1)] | None = None


class GRPCAuthConfig(Model):
    """gRPC external authorization settings."""

    allowed_headers: list[str] = Field(default_factory=list)


class HTTPAuthConfig(Model):
    """HTTP external authorization settings."""

    path: str | None = None
    allowed_headers: list[str] = Field(default_factory=list)
    allowed_response_headers: list[str] = Field(default_factory=list)


class ForwardBodyConfig(Model):
    """How much of the body an external authorizer receives."""

    max_size: int | None = None


class HTTPExternalAuthFilter(Model):
    """Ask an external authorizer about each request."""

    protocol: Literal["HTTP", "GRPC"] | None = None
    backend_ref: BackendObjectReference | None = None
    grpc: GRPCAuthConfig | None = None
    http: HTTPAuthConfig | None = None
    forward_body: ForwardBodyConfig | None = None


class HTTPRouteFilter(Model):
    """One filter: `type` names which of the other fields it sets."""

    type: FilterType
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_mirror: HTTPRequestMirrorFilter | None = None
    request_redirect: HTTPRequestRedirectFilter | None = None
    url_rewrite: HTTPURLRewriteFilter | None = None
    cors: HTTPCORSFilter | None = None
    external_auth: HTTPExternalAuthFilter | None = None
    extension_ref: LocalObjectReference | None = None


class HTTPBackendRef(BackendRef):
    """A backend, its weight, and filters for the requests sent to it."""

    filters: list[HTTPRouteFilter] = Field(default_factory=list)


class HTTPRouteTimeouts(Model):
    """The whole request's timeout, and each try's to the backend."""

    request: Duration | None = None
    backend_request: Duration | None = None


class HTTPRouteRetry(Model):
    """Retries: which status codes, how many attempts, the backoff."""

    codes: list[Annotated[int, ranged(400, 599)]] = Field(default_factory=list)
    attempts: Annotated[int, ranged(0, 2**31 - 1)] | None = None
    backoff: Duration | None = None


class CookieConfig(Model):
    """A session cookie."""

    name: str | None = None
    path: str | None = None
    lifetime_type: Literal["Permanent", "Session"] | None = None


class HeaderConfig(Model):
    """A session header."""

    name: str


class SessionPersistence(Model):
    """Keep a client's requests on one backend (kept)."""

    absolute_timeout: Duration | None = None
    idle_timeout: Duration | None = None
    session_name: str | None = None
    type: Literal["Cookie", "Header"] | None = None
    cookie: CookieConfig | None = None
    header: HeaderConfig | None = None


class HTTPRouteRule(Model):
    """Matches (any of them), filters, and the backends matching requests go to."""

    name: str | None = None
    matches: list[HTTPRouteMatch] = Field(default_factory=list)
    filters: list[HTTPRouteFilter] = Field(default_factory=list)
    backend_refs: list[HTTPBackendRef] = Field(default_factory=list)
    timeouts: HTTPRouteTimeouts | None = None
    retry: HTTPRouteRetry | None = None
    session_persistence: SessionPersistence | None = None


class HTTPRouteSpec(Model):
    """Where the route attaches, the hostnames it serves, and its rules."""

    parent_refs: list[ParentReference] = Field(default_factory=list)
    use_default_gateways: str | None = None
    hostnames: list[str] = Field(default_factory=list)
    rules: list[HTTPRouteRule] = Field(default_factory=list)


class HTTPRoute(Resource):
    """`gateway.networking.k8s.io` HTTPRoute: HTTP routing on Gateways and for Services."""

    GROUP: ClassVar[str] = GROUP
    KIND: ClassVar[str] = "HTTPRoute"
    PLURAL: ClassVar[str] = "httproutes"
    VERSIONS: ClassVar[tuple[str, ...]] = STABLE_VERSIONS

    spec: HTTPRouteSpec

    def check(self) -> Iterator[Finding]:
        """What the Gateway API's CRD validation refuses in a rule."""
        for r, rule in enumerate(self.spec.rules):
            path: FieldPath = ("spec", "rules", r)
            for m, match in enumerate(rule.matches):
                yield from _check_path_match(match.path, (*path, "matches", m, "path"))
            yield from _check_filters(rule.filters, (*path, "filters"), rule)
            if rule.backend_refs and any(f.type == "RequestRedirect" for f in rule.filters):
                yield Finding((*path, "backendRefs"), "a RequestRedirect rule takes no backendRefs")
            for b, backend in enumerate(rule.backend_refs):
                where = (*path, "backendRefs", b)
                yield from _check_filters(backend.filters, (*where, "filters"), rule)
                if backend.is_service and backend.port is None:
                    yield Finding(where, "a Service backend needs a port")


def _check_path_match(match: HTTPPathMatch | None, path: FieldPath) -> Iterator[Finding]:
    if match is None or match.value is None or match.type == "RegularExpression":
        return
    if not match.value.startswith("/"):
        yield Finding((*path, "value"), "must start with '/'")


def _check_filters(
    filters: list[HTTPRouteFilter], path: FieldPath, rule: HTTPRouteRule
) -> Iterator[Finding]:
    seen: set[str] = set()
    types = {f.type for f in filters}
    if {"RequestRedirect", "URLRewrite"} <= types:
        yield Finding(path, "RequestRedirect and URLRewrite cannot be combined")
    for index, item in enumerate(filters):
        where = (*path, index)
        field = to_camel(FILTER_ATTRIBUTES[item.type])
        given = [to_camel(a) for a in FILTER_ATTRIBUTES.values() if getattr(item, a) is not None]
        if given != [field]:
            yield Finding(where, f"type {item.type} needs {field} and no other filter field")
        if item.type in seen and item.type not in ("RequestMirror", "ExtensionRef"):
            yield Finding((*where, "type"), f"{item.type} is given twice")
        seen.add(item.type)
        modifier = _path_modifier(item)
        if modifier is not None:
            yield from _check_modifier(modifier, (*where, field, "path"), rule)


def _path_modifier(item: HTTPRouteFilter) -> HTTPPathModifier | None:
    if item.request_redirect is not None:
        return item.request_redirect.path
    if item.url_rewrite is not None:
        return item.url_rewrite.path
    return None


def _check_modifier(
    modifier: HTTPPathModifier, path: FieldPath, rule: HTTPRouteRule
) -> Iterator[Finding]:
    if modifier.type == "ReplaceFullPath" and modifier.replace_full_path is None:
        yield Finding(path, "ReplaceFullPath needs replaceFullPath")
    if modifier.type == "ReplacePrefixMatch":
        if modifier.replace_prefix_match is None:
            yield Finding(path, "ReplacePrefixMatch needs replacePrefixMatch")
        prefixes = [
            m for m in rule.matches if m.path is None or m.path.type in (None, "PathPrefix")
        ]
        if len(rule.matches) != 1 or len(prefixes) != 1:
            yield Finding(path, "ReplacePrefixMatch needs exactly one PathPrefix match in the rule")


class GRPCMethodMatch(Model):
    """A gRPC service and method, Exact unless told otherwise."""

    type: ValueMatchType | None = None
    service: str | None = None
    method: str | None = None


class GRPCRouteMatch(Model):
    """A gRPC method and headers."""

    method: GRPCMethodMatch | None = None
    headers: list[HTTPHeaderMatch] = Field(default_factory=list)


class GRPCRouteFilter(Model):
    """One filter of a gRPC rule."""

    type: Literal[
        "RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "ExtensionRef"
    ]
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_mirror: HTTPRequestMirrorFilter | None = None
    extension_ref: LocalObjectReference | None = None


class GRPCBackendRef(BackendRef):
    """A gRPC backend, its weight and filters."""

    filters: list[GRPCRouteFilter] = Field(default_factory=list)


class GRPCRouteRule(Model):
    """Matches, filters and backends of gRPC requests."""

    name: str | None = None
    matches: list[GRPCRouteMatch] = Field(default_factory=list)
    filters: list[GRPCRouteFilter] = Field(default_factory=list)
    backend_refs: list[GRPCBackendRef] = Field(default_factory=list)
    session_persistence: SessionPersistence | None = None


class GRPCRouteSpec(Model):
    """Where a gRPC route attaches, its hostnames and rules."""

    parent_refs: list[ParentReference] = Field(default_factory=list)
    use_default_gateways: str | None = None
    hostnames: list[str] = Field(default_factory=list)
    rules: list[GRPCRouteRule] = Field(default_factory=list)


class GRPCRoute(Resource):
    """`gateway.networking.k8s.io` GRPCRoute: loads and is kept; not routed yet."""

    GROUP: ClassVar[str] = GROUP
    KIND: ClassVar[str] = "GRPCRoute"
    PLURAL: ClassVar[str] = "grpcroutes"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1", "v1alpha2")

    spec: GRPCRouteSpec = Field(default_factory=GRPCRouteSpec)


class StreamRouteRule(Model):
    """Backends of a TLS or TCP rule."""

    name: str | None = None
    backend_refs: list[BackendRef] = Field(default_factory=list)


class TLSRouteSpec(Model):
    """Where a TLS route attaches, its SNI hostnames and rules."""

    parent_refs: list[ParentReference] = Field(default_factory=list)
    use_default_gateways: str | None = None
    hostnames: list[str] = Field(default_factory=list)
    rules: list[StreamRouteRule] = Field(default_factory=list)


class TLSRoute(Resource):
    """`gateway.networking.k8s.io` TLSRoute: loads and is kept; not routed yet."""

    GROUP: ClassVar[str] = GROUP
    KIND: ClassVar[str] = "TLSRoute"
    PLURAL: ClassVar[str] = "tlsroutes"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1", "v1alpha3", "v1alpha2")

    spec: TLSRouteSpec


class TCPRouteSpec(Model):
    """Where a TCP route attaches, and its rules."""

    parent_refs: list[ParentReference] = Field(default_factory=list)
    use_default_gateways: str | None = None
    rules: list[StreamRouteRule] = Field(default_factory=list)


class TCPRoute(Resource):
    """`gateway.networking.k8s.io` TCPRoute: loads and is kept; not routed yet."""

    GROUP: ClassVar[str] = GROUP
    KIND: ClassVar[str] = "TCPRoute"
    PLURAL: ClassVar[str] = "tcproutes"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1", "v1alpha2")

    spec: TCPRouteSpec
