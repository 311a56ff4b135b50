"""Istio networking kinds: VirtualService, DestinationRule, Gateway, ServiceEntry, WorkloadEntry."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from gossamer.resources.base import (
    Duration,
    Finding,
    IntOrString,
    Labels,
    Model,
    NonNegative,
    Percentage,
    Port,
    Resource,
    UInt32,
    WorkloadSelector,
    ranged,
)
from gossamer.resources.problems import Severity
from gossamer.resources.yamlsource import FieldPath

ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")


class StringMatch(Model):
    """Exactly one of exact, prefix or regex (RE2 syntax)."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    def problems(self, path: FieldPath) -> Iterator[Finding]:
        """A match names exactly one way of matching."""
        given = [v for v in (self.exact, self.prefix, self.regex) if v is not None]
        if len(given) > 1:
            yield Finding(path, "must give only one of exact, prefix or regex")


class PortSelector(Model):
    """A destination port by number."""

    number: Port | None = None


class Destination(Model):
    """A service (host), optionally a subset of it and a port."""

    host: str
    subset: str | None = None
    port: PortSelector | None = None


class HeaderOperations(Model):
    """Headers to set (replace), add (append) and remove."""

    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class Headers(Model):
    """Header changes on the request and on the response."""

    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPMatchRequest(Model):
    """The conditions of one match block; all must hold."""

    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = Field(default_factory=dict)
    port: Port | None = None
    source_labels: Labels = Field(default_factory=dict)
    gateways: list[str] = Field(default_factory=list)
    query_params: dict[str, StringMatch] = Field(default_factory=dict)
    ignore_uri_case: bool | None = None
    without_headers: dict[str, StringMatch] = Field(default_factory=dict)
    source_namespace: str | None = None
    stat_prefix: str | None = None


class HTTPRouteDestination(Model):
    """A weighted destination of an HTTP route."""

    destination: Destination
    weight: Annotated[int, ranged(0, 100)] | None = None
    headers: Headers | None = None


class RouteDestination(Model):
    """A weighted destination of a TLS or TCP route."""

    destination: Destination
    weight: Annotated[int, ranged(0, 100)] | None = None


class HTTPRedirect(Model):
    """Answer with a redirect instead of forwarding."""

    uri: str | None = None
    authority: str | None = None
    port: Port | None = None
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
    scheme: str | None = None
    redirect_code: Annotated[int, ranged(300, 399)] | None = None
    prefix_rewrite: str | None = None


class HTTPBody(Model):
    """A direct response body, as text or as base64 bytes."""

    string: str | None = None
    bytes: str | None = None


class HTTPDirectResponse(Model):
    """Answer with a fixed status and body instead of forwarding."""

    status: Annotated[int, ranged(200, 599)]
    body: HTTPBody | None = None


class Delegate(Model):
    """Hand the route to another VirtualService."""

    name: str | None = None
    namespace: str | None = None


class RegexRewrite(Model):
    """Rewrite the path with a regular expression and a replacement."""

    match: str | None = None
    rewrite: str | None = None


class HTTPRewrite(Model):
    """Rewrite the path prefix or the authority before forwarding."""

    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None


class HTTPRetry(Model):
    """How often and on what a request is retried."""

    attempts: NonNegative | None = None
    per_try_timeout: Duration | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None
    retry_ignore_previous_hosts: bool | None = None
    backoff: Duration | None = None


class Percent(Model):
    """A percentage from 0 to 100, fractions allowed."""

    value: Percentage = 0.0


class Delay(Model):
    """Fault injection: delay some requests."""

    fixed_delay: Duration | None = None
    exponential_delay: Duration | None = None
    percentage: Percent | None = None
    percent: Annotated[int, ranged(0, 100)] | None = None


class Abort(Model):
    """Fault injection: fail some requests."""

    http_status: Annotated[int, ranged(200, 599)] | None = None
    grpc_status: str | None = None
    http2_error: str | None = None
    percentage: Percent | None = None


class HTTPFaultInjection(Model):
    """Delays and aborts injected to test resilience."""

    delay: Delay | None = None
    abort: Abort | None = None


class HTTPMirrorPolicy(Model):
    """One mirror destination and the share of traffic copied to it."""

    destination: Destination
    percentage: Percent | None = None


class CorsPolicy(Model):
    """CORS answers for browsers."""

    allow_origins: list[StringMatch] = Field(default_factory=list)
    allow_origin: list[str] = Field(default_factory=list)
    allow_methods: list[str] = Field(default_factory=list)
    allow_headers: list[str] = Field(default_factory=list)
    expose_headers: list[str] = Field(default_factory=list)
    max_age: Duration | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: Literal["UNSPECIFIED", "FORWARD", "IGNORE"] | None = None


class SessionPersistenceCookie(Model):
    """The cookie that carries a persistent session."""

    name: str | None = None
    path: str | None = None
    lifetime_type: Literal["SESSION", "PERMANENT"] | None = None


class SessionPersistenceHeader(Model):
    """The header that carries a persistent session."""

    name: str


class SessionPersistence(Model):
    """Keep a client's requests on the destination its session started on."""

    absolute_timeout: Duration | None = None
    type: Literal["COOKIE", "HEADER"] | None = None
    cookie: SessionPersistenceCookie | None = None
    header: SessionPersistenceHeader | None = None


class HTTPRoute(Model):
    """One HTTP rule: when it matches, and what happens to the request."""

    name: str | None = None
    match: list[HTTPMatchRequest] = Field(default_factory=list)
    route: list[HTTPRouteDestination] = Field(default_factory=list)
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    delegate: Delegate | None = None
    rewrite: HTTPRewrite | None = None
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrors: list[HTTPMirrorPolicy] = Field(default_factory=list)
    mirror_percentage: Percent | None = None
    mirror_percent: Annotated[int, ranged(0, 100)] | None = None
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None
    session_persistence: SessionPersistence | None = None


class TLSMatchAttributes(Model):
    """Match a TLS connection by SNI and port."""

    sni_hosts: list[str] = Field(default_factory=list)
    destination_subnets: list[str] = Field(default_factory=list)
    port: Port | None = None
    source_labels: Labels = Field(default_factory=dict)
    gateways: list[str] = Field(default_factory=list)
    source_namespace: str | None = None


class TLSRoute(Model):
    """Route a TLS connection (not terminated) by SNI."""

    match: list[TLSMatchAttributes] = Field(default_factory=list)
    route: list[RouteDestination] = Field(default_factory=list)


class L4MatchAttributes(Model):
    """Match a TCP connection by destination and port."""

    destination_subnets: list[str] = Field(default_factory=list)
    port: Port | None = None
    source_labels: Labels = Field(default_factory=dict)
    gateways: list[str] = Field(default_factory=list)
    source_namespace: str | None = None


class TCPRoute(Model):
    """Route a TCP connection."""

    match: list[L4MatchAttributes] = Field(default_factory=list)
    route: list[RouteDestination] = Field(default_factory=list)


class VirtualServiceSpec(Model):
    """Istio VirtualService: routing rules for some hosts."""

    hosts: list[str] = Field(default_factory=list)
    gateways: list[str] = Field(default_factory=list)
    http: list[HTTPRoute] = Field(default_factory=list)
    tls: list[TLSRoute] = Field(default_factory=list)
    tcp: list[TCPRoute] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)

    def layer4_routes(self) -> Iterator[tuple[FieldPath, list[RouteDestination]]]:
        """The destination lists of the tls and tcp rules, each with its path."""
        for r, tls in enumerate(self.tls):
            yield ("spec", "tls", r, "route"), tls.route
        for r, tcp in enumerate(self.tcp):
            yield ("spec", "tcp", r, "route"), tcp.route


class VirtualService(Resource):
    """`networking.istio.io` VirtualService."""

    GROUP: ClassVar[str] = "networking.istio.io"
    KIND: ClassVar[str] = "VirtualService"
    PLURAL: ClassVar[str] = "virtualservices"
    VERSIONS: ClassVar[tuple[str, ...]] = ISTIO_VERSIONS

    spec: VirtualServiceSpec

    def destinations(self) -> Iterator[tuple[FieldPath, Destination]]:
        """Every destination the routes send to, with the path of its `destination` field."""
        for r, rule in enumerate(self.spec.http):
            for d, weighted in enumerate(rule.route):
                yield ("spec", "http", r, "route", d, "destination"), weighted.destination
        for path, targets in self.spec.layer4_routes():
            for d, target in enumerate(targets):
                yield (*path, d, "destination"), target.destination
        for r, http in enumerate(self.spec.http):
            if http.mirror is not None:
                yield ("spec", "http", r, "mirror"), http.mirror
            for m, mirror in enumerate(http.mirrors):
                yield ("spec", "http", r, "mirrors", m, "destination"), mirror.destination

    def check(self) -> Iterator[Finding]:
        """Istio's own VirtualService rules, as `istioctl validate` applies them."""
        if not self.spec.hosts:
            yield from _check_delegate(self.spec)
        if not (self.spec.http or self.spec.tls or self.spec.tcp):
            yield Finding(("spec",), "needs at least one http, tls or tcp route")
        for r, rule in enumerate(self.spec.http):
            yield from _check_http_route(rule, ("spec", "http", r))
        for path, targets in self.spec.layer4_routes():
            if not targets:
                yield Finding(path, "must list at least one destination")
        yield from _check_weights(self)


def _check_delegate(spec: VirtualServiceSpec) -> Iterator[Finding]:
    # Without hosts a VirtualService is a delegate: another one hands it HTTP routes.
    for name, given in (("gateways", spec.gateways), ("tls", spec.tls), ("tcp", spec.tcp)):
        if given:
            yield Finding(
                ("spec", name), f"a VirtualService without hosts is a delegate and takes no {name}"
            )
    for r, rule in enumerate(spec.http):
        if rule.delegate is not None:
            yield Finding(
                ("spec", "http", r, "delegate"),
                "a VirtualService without hosts is a delegate and cannot delegate again",
            )


def _check_http_route(rule: HTTPRoute, path: FieldPath) -> Iterator[Finding]:
    actions = [
        name
        for name, value in (
            ("route", rule.route),
            ("redirect", rule.redirect),
            ("directResponse", rule.direct_response),
            ("delegate", rule.delegate),
        )
        if value
    ]
    if not actions:
        yield Finding(path, "needs one of route, redirect, directResponse or delegate")
    elif len(actions) > 1 and set(actions) != {"redirect", "directResponse"}:
        yield Finding(path, f"gives {' and '.join(actions)}; a rule takes only one of them")
    if rule.mirror is not None and rule.mirrors:
        yield Finding((*path, "mirrors"), "cannot be used together with mirror")
    if rule.redirect is not None and rule.redirect.uri and rule.redirect.prefix_rewrite:
        yield Finding((*path, "redirect"), "give uri or prefixRewrite, not both")
    if rule.rewrite is not None and rule.rewrite.uri and rule.rewrite.uri_regex_rewrite:
        yield Finding((*path, "rewrite"), "give uri or uriRegexRewrite, not both")
    for m, match in enumerate(rule.match):
        where = (*path, "match", m)
        for field_name in ("uri", "scheme", "method", "authority"):
            value = getattr(match, field_name)
            if value is not None:
                yield from value.problems((*where, field_name))
        for group_name, group in (
            ("headers", match.headers),
            ("queryParams", match.query_params),
            ("withoutHeaders", match.without_headers),
        ):
            for key, value in group.items():
                yield from value.problems((*where, group_name, key))
    if rule.fault is not None:
        if rule.fault.abort is not None and (
            (rule.fault.abort.http_status is None) == (rule.fault.abort.grpc_status is None)
            and rule.fault.abort.http2_error is None
        ):
            yield Finding((*path, "fault", "abort"), "give one of httpStatus or grpcStatus")
        if rule.fault.delay is not None and not (
            rule.fault.delay.fixed_delay or rule.fault.delay.exponential_delay
        ):
            yield Finding((*path, "fault", "delay"), "give fixedDelay (or exponentialDelay)")


def _check_weights(service: VirtualService) -> Iterator[Finding]:
    groups: list[tuple[FieldPath, list[int | None]]] = []
    for r, http in enumerate(service.spec.http):
        groups.append((("spec", "http", r, "route"), [d.weight for d in http.route]))
    for path, targets in service.spec.layer4_routes():
        groups.append((path, [d.weight for d in targets]))
    for path, weights in groups:
        if len(weights) < 2 and all(w is None for w in weights):
            continue
        total = sum(w or 0 for w in weights)
        if total == 0:
            yield Finding(path, "weights add up to 0, so no request can be sent anywhere")
        elif total != 100:
            yield Finding(
                path,
                f"weights add up to {total}, not 100; traffic will be split in proportion",
                severity=Severity.WARNING,
            )


class CookieAttribute(Model):
    """An attribute of a generated cookie."""

    name: str
    value: str | None = None


class ConsistentHashCookie(Model):
    """Hash on a cookie, which the proxy sets when a ttl is given and the cookie is missing."""

    name: str
    path: str | None = None
    ttl: Duration | None = None
    attributes: list[CookieAttribute] = Field(default_factory=list)


class RingHash(Model):
    """Ring-hash settings."""

    minimum_ring_size: NonNegative | None = None


class MagLev(Model):
    """Maglev settings."""

    table_size: NonNegative | None = None


class ConsistentHashLB(Model):
    """Send requests with the same key to the same endpoint."""

    http_header_name: str | None = None
    http_cookie: ConsistentHashCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    ring_hash: RingHash | None = None
    maglev: MagLev | None = None
    minimum_ring_size: NonNegative | None = None


class LocalityDistribute(Model):
    """Share of traffic from one locality to others."""

    from_: str | None = Field(default=None, alias="from")
    to: dict[str, UInt32] = Field(default_factory=dict)


class LocalityFailover(Model):
    """Where traffic from one region goes when its endpoints are unhealthy."""

    from_: str | None = Field(default=None, alias="from")
    to: str | None = None


class LocalityLoadBalancerSetting(Model):
    """Locality-aware load balancing."""

    distribute: list[LocalityDistribute] = Field(default_factory=list)
    failover: list[LocalityFailover] = Field(default_factory=list)
    failover_priority: list[str] = Field(default_factory=list)
    enabled: bool | None = None


class WarmupConfiguration(Model):
    """Slow start: ramp traffic to a new endpoint."""

    duration: Duration
    minimum_percent: Percentage | None = None
    aggression: float | None = None


class LoadBalancerSettings(Model):
    """How an endpoint is chosen. PEAK_EWMA is a Gossamer extension to Istio's list."""

    simple: (
        Literal[
            "UNSPECIFIED",
            "RANDOM",
            "PASSTHROUGH",
            "ROUND_ROBIN",
            "LEAST_REQUEST",
            "LEAST_CONN",
            "PEAK_EWMA",
        ]
        | None
    ) = None
    consistent_hash: ConsistentHashLB | None = None
    locality_lb_setting: LocalityLoadBalancerSetting | None = None
    warmup_duration_secs: Duration | None = None
    warmup: WarmupConfiguration | None = None


class TcpKeepalive(Model):
    """TCP keepalive probes."""

    probes: UInt32 | None = None
    time: Duration | None = None
    interval: Duration | None = None


class TCPSettings(Model):
    """Connection limits shared by HTTP and TCP."""

    max_connections: NonNegative | None = None
    connect_timeout: Duration | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: Duration | None = None
    idle_timeout: Duration | None = None


class HTTPSettings(Model):
    """HTTP connection pool limits: the circuit breaker."""

    http1_max_pending_requests: NonNegative | None = None
    http2_max_requests: NonNegative | None = None
    max_requests_per_connection: NonNegative | None = None
    max_retries: NonNegative | None = None
    idle_timeout: Duration | None = None
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None
    use_client_protocol: bool | None = None
    max_concurrent_streams: NonNegative | None = None


class ConnectionPoolSettings(Model):
    """Upstream connection pool limits."""

    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(Model):
    """Eject endpoints that keep failing."""

    split_external_local_origin_errors: bool | None = None
    consecutive_local_origin_failures: NonNegative | None = None
    consecutive_gateway_errors: NonNegative | None = None
    consecutive5xx_errors: NonNegative | None = Field(default=None, alias="consecutive5xxErrors")
    interval: Duration | None = None
    base_ejection_time: Duration | None = None
    max_ejection_percent: Annotated[int, ranged(0, 100)] | None = None
    min_health_percent: Annotated[int, ranged(0, 100)] | None = None
    consecutive_errors: NonNegative | None = None


class ClientTLSSettings(Model):
    """TLS the proxy originates to the upstream."""

    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"] | None = None
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: list[str] = Field(default_factory=list)
    sni: str | None = None
    insecure_skip_verify: bool | None = None
    ca_crl: str | None = None


class PortTrafficPolicy(Model):
    """Traffic policy for one port of the service."""

    port: PortSelector | None = None
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TunnelSettings(Model):
    """Tunnel TCP over HTTP CONNECT or POST."""

    protocol: Literal["CONNECT", "POST"] | None = None
    target_host: str
    target_port: Port


class ProxyProtocol(Model):
    """Send the PROXY protocol header upstream."""

    version: Literal["V1", "V2"] | None = None


class RetryBudget(Model):
    """Cap retries as a share of active requests."""

    percent: Percentage | None = None
    min_retry_concurrency: NonNegative | None = None


class TrafficPolicy(Model):
    """Load balancing, connection pool, outlier detection and TLS for a destination."""

    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy] = Field(default_factory=list)
    tunnel: TunnelSettings | None = None
    proxy_protocol: ProxyProtocol | None = None
    retry_budget: RetryBudget | None = None


class Subset(Model):
    """A named group of a service's endpoints, chosen by labels."""

    name: str
    labels: Labels = Field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None


class DestinationRuleSpec(Model):
    """Istio DestinationRule: policies for traffic to one host, and its subsets."""

    host: str
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)
    workload_selector: WorkloadSelector | None = None


class DestinationRule(Resource):
    """`networking.istio.io` DestinationRule."""

    GROUP: ClassVar[str] = "networking.istio.io"
    KIND: ClassVar[str] = "DestinationRule"
    PLURAL: ClassVar[str] = "destinationrules"
    VERSIONS: ClassVar[tuple[str, ...]] = ISTIO_VERSIONS

    spec: DestinationRuleSpec

    def check(self) -> Iterator[Finding]:
        """Subset names are unique; one load balancer kind per policy."""
        seen: dict[str, int] = {}
        for index, subset in enumerate(self.spec.subsets):
            if subset.name in seen:
                yield Finding(
                    ("spec", "subsets", index, "name"),
                    f"subset {subset.name} is already spec.subsets[{seen[subset.name]}]",
                )
            seen.setdefault(subset.name, index)
        policies: list[tuple[FieldPath, TrafficPolicy]] = []
        if self.spec.traffic_policy is not None:
            policies.append((("spec", "trafficPolicy"), self.spec.traffic_policy))
        for index, subset in enumerate(self.spec.subsets):
            if subset.traffic_policy is not None:
                policies.append(
                    (("spec", "subsets", index, "trafficPolicy"), subset.traffic_policy)
                )
        for path, policy in policies:
            balancer = policy.load_balancer
            if balancer is not None and balancer.simple and balancer.consistent_hash:
                yield Finding((*path, "loadBalancer"), "give simple or consistentHash, not both")


class ServerTLSCertificate(Model):
    """One of several certificates a server presents."""

    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None


TLSVersion = Literal["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"]


class ServerTLSSettings(Model):
    """TLS a gateway server terminates or passes through."""

    https_redirect: bool | None = None
    mode: (
        Literal[
            "PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"
        ]
        | None
    ) = None
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    ca_crl: str | None = None
    credential_name: str | None = None
    credential_names: list[str] = Field(default_factory=list)
    ca_cert_credential_name: str | None = None
    tls_certificates: list[ServerTLSCertificate] = Field(default_factory=list)
    subject_alt_names: list[str] = Field(default_factory=list)
    verify_certificate_spki: list[str] = Field(default_factory=list)
    verify_certificate_hash: list[str] = Field(default_factory=list)
    min_protocol_version: TLSVersion | None = None
    max_protocol_version: TLSVersion | None = None
    cipher_suites: list[str] = Field(default_factory=list)


class GatewayPort(Model):
    """A port a gateway listens on and the protocol it speaks there."""

    number: Port
    protocol: str
    name: str | None = None
    target_port: Port | None = None


class Server(Model):
    """One listener of a gateway: a port, the hosts it serves, its TLS."""

    port: GatewayPort
    bind: str | None = None
    hosts: list[str]
    tls: ServerTLSSettings | None = None
    default_endpoint: str | None = None
    name: str | None = None


class GatewaySpec(Model):
    """Istio Gateway: the servers of an edge proxy."""

    servers: list[Server]
    selector: Labels = Field(default_factory=dict)


class Gateway(Resource):
    """`networking.istio.io` Gateway."""

    GROUP: ClassVar[str] = "networking.istio.io"
    KIND: ClassVar[str] = "Gateway"
    PLURAL: ClassVar[str] = "gateways"
    VERSIONS: ClassVar[tuple[str, ...]] = ISTIO_VERSIONS

    spec: GatewaySpec

    def check(self) -> Iterator[Finding]:
        """Each server lists hosts; an HTTPS server says how to do TLS."""
        for index, server in enumerate(self.spec.servers):
            path = ("spec", "servers", index)
            if not server.hosts:
                yield Finding((*path, "hosts"), "must list at least one host")
            protocol = server.port.protocol.upper()
            if protocol in {"HTTPS", "TLS"} and server.tls is None:
                yield Finding((*path, "tls"), f"a {protocol} server needs tls settings")


class ServicePort(Model):
    """A port of a ServiceEntry."""

    number: Port
    protocol: str | None = None
    name: str
    target_port: Port | None = None


class WorkloadEntrySpec(Model):
    """A workload outside Kubernetes: a WorkloadEntry's spec, and an endpoint of a ServiceEntry."""

    address: str | None = None
    ports: dict[str, Port] = Field(default_factory=dict)
    labels: Labels = Field(default_factory=dict)
    network: str | None = None
    locality: str | None = None
    weight: UInt32 | None = None
    service_account: str | None = None

    @property
    def unix_socket(self) -> bool:
        """Whether the address is a Unix domain socket (`unix:///path` or `unix://@name`)."""
        return (self.address or "").startswith(UNIX_PREFIX)

    def problems(self, path: FieldPath) -> Iterator[Finding]:
        """Istio's rules for the address and the port names, as `istioctl validate` applies them."""
        if not self.address:
            if not self.network:
                yield Finding((*path, "address"), "required (or network, for a remote workload)")
            else:
                yield Finding(
                    (*path, "address"),
                    "not given: Gossamer does not reach a workload through the gateway of "
                    f"network {self.network}, so this one has no endpoint",
                    severity=Severity.WARNING,
                )
        else:
            wrong = _address_problem(self.address)
            if wrong is not None:
                yield Finding((*path, "address"), wrong)
        if self.unix_socket and self.ports:
            yield Finding((*path, "ports"), "a unix:// address takes no ports")
        for name in self.ports:
            if not (len(name) <= 63 and _DNS_LABEL.fullmatch(name)):
                yield Finding(
                    (*path, "ports", name),
                    "a port name must be a DNS label: at most 63 lowercase letters, digits and "
                    "'-', starting and ending with a letter or digit",
                )


UNIX_PREFIX = "unix://"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# The longest address Istio's schema accepts.
_MAX_ADDRESS = 256


def _address_problem(address: str) -> str | None:
    """What is wrong with a workload address, which is an IP, a host name or a Unix socket."""
    if len(address) > _MAX_ADDRESS:
        return f"must be at most {_MAX_ADDRESS} characters"
    if address.startswith(UNIX_PREFIX):
        socket = address.removeprefix(UNIX_PREFIX)
        if not socket.startswith(("/", "@")):
            return "a unix:// address needs an absolute path (unix:///run/app.sock) or @name"
        if socket.endswith("/"):
            return "a unix:// address names a socket, not a folder"
        return None
    if _is_ip(address) or _is_host_name(address):
        return None
    return (
        f"{address!r} is not an IP address, a fully qualified host name (no wildcard) or "
        "unix:///path/to/socket"
    )


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _is_host_name(address: str) -> bool:
    # A trailing dot is allowed; a numeric last label would be a mistyped IP address.
    labels = address.removesuffix(".").split(".")
    return (
        len(address) <= 255
        and not labels[-1].isdigit()
        and all(len(label) <= 63 and _DNS_LABEL.fullmatch(label) for label in labels)
    )


class EntryWorkloadSelector(Model):
    """A ServiceEntry's workload selector: plain `labels`, unlike the policies' `matchLabels`."""

    labels: Labels = Field(default_factory=dict)


class ServiceEntrySpec(Model):
    """Istio ServiceEntry: a service outside (or not registered in) the mesh."""

    hosts: list[str]
    addresses: list[str] = Field(default_factory=list)
    ports: list[ServicePort] = Field(default_factory=list)
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] | None = None
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"] | None = None
    endpoints: list[WorkloadEntrySpec] = Field(default_factory=list)
    workload_selector: EntryWorkloadSelector | None = None
    export_to: list[str] = Field(default_factory=list)
    subject_alt_names: list[str] = Field(default_factory=list)


class ServiceEntry(Resource):
    """`networking.istio.io` ServiceEntry."""

    GROUP: ClassVar[str] = "networking.istio.io"
    KIND: ClassVar[str] = "ServiceEntry"
    PLURAL: ClassVar[str] = "serviceentries"
    VERSIONS: ClassVar[tuple[str, ...]] = ISTIO_VERSIONS

    spec: ServiceEntrySpec

    def check(self) -> Iterator[Finding]:
        """Istio's rules: hosts given, STATIC needs endpoints, endpoints or a selector."""
        if not self.spec.hosts:
            yield Finding(("spec", "hosts"), "must list at least one host")
        if self.spec.resolution == "STATIC" and not (
            self.spec.endpoints or self.spec.workload_selector
        ):
            yield Finding(("spec", "resolution"), "STATIC resolution needs endpoints")
        if self.spec.endpoints and self.spec.workload_selector is not None:
            yield Finding(("spec", "workloadSelector"), "give endpoints or workloadSelector")
        port_names = {port.name for port in self.spec.ports}
        for index, endpoint in enumerate(self.spec.endpoints):
            for name in endpoint.ports:
                if name not in port_names:
                    yield Finding(
                        ("spec", "endpoints", index, "ports", name),
                        f"names no port of spec.ports (known: {', '.join(sorted(port_names))})",
                    )


class IstioCondition(Model):
    """One condition Istio reports on an object, e.g. `Healthy` on an auto-registered workload."""

    type: str
    status: Literal["True", "False", "Unknown"]
    last_probe_time: str | None = None
    last_transition_time: str | None = None
    reason: str | None = None
    message: str | None = None
    observed_generation: IntOrString | None = None


class AnalysisMessageType(Model):
    """Which analyzer message: its code (`IST0101`) and name."""

    code: str | None = None
    name: str | None = None


class AnalysisMessage(Model):
    """A finding of Istio's analyzers on the object."""

    type: AnalysisMessageType | None = None
    level: Literal["UNKNOWN", "ERROR", "WARNING", "INFO"] | None = None
    documentation_url: str | None = None


class IstioStatus(Model):
    """What istiod writes about an Istio object: conditions and analyzer messages."""

    conditions: list[IstioCondition] = Field(default_factory=list)
    validation_messages: list[AnalysisMessage] = Field(default_factory=list)
    observed_generation: IntOrString | None = None


# Istio's health checks of an auto-registered workload report as this condition.
HEALTHY_CONDITION = "Healthy"
# Gossamer's own: the workload is fronted by a sidecar that takes every service port on this one.
INBOUND_PORT_ANNOTATION = "gossamer.dev/inbound-port"


class WorkloadEntry(Resource):
    """`networking.istio.io` WorkloadEntry: one workload outside Kubernetes, such as a VM."""

    GROUP: ClassVar[str] = "networking.istio.io"
    KIND: ClassVar[str] = "WorkloadEntry"
    PLURAL: ClassVar[str] = "workloadentries"
    VERSIONS: ClassVar[tuple[str, ...]] = ISTIO_VERSIONS

    spec: WorkloadEntrySpec
    status: IstioStatus | None = None

    @property
    def healthy(self) -> bool:
        """False when Istio's health checks say so; an entry without them is static, so healthy."""
        conditions = self.status.conditions if self.status is not None else []
        return all(c.status == "True" for c in conditions if c.type == HEALTHY_CONDITION)

    @property
    def inbound_port(self) -> int | None:
        """The port of the sidecar in front of the workload, when the annotation names one."""
        text = self.metadata.annotations.get(INBOUND_PORT_ANNOTATION)
        return int(text) if text is not None and _port_text(text) else None

    def check(self) -> Iterator[Finding]:
        """Istio's rules for the spec, and a port number in Gossamer's inbound-port annotation."""
        yield from self.spec.problems(("spec",))
        text = self.metadata.annotations.get(INBOUND_PORT_ANNOTATION)
        if text is not None and not _port_text(text):
            yield Finding(
                ("metadata", "annotations", INBOUND_PORT_ANNOTATION),
                f"must be a port number between 1 and 65535, not {text!r}",
            )


def _port_text(text: str) -> bool:
    return text.isascii() and text.isdigit() and 1 <= int(text) <= 65535
