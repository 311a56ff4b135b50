"""The configuration one proxy runs: listeners, routes, clusters, endpoints; immutable, versioned.

Both planes import this module and nothing else of each other. Durations are seconds (float),
header names are lowercase, and every struct is frozen: a proxy swaps a whole snapshot at once and
a request keeps the one it started with.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Role = Literal["inbound", "outbound", "gateway"]
# `path_prefix` is Kubernetes' Prefix type: "/foo" matches "/foo" and "/foo/bar", not "/foobar".
MatchKind = Literal["exact", "prefix", "regex", "path_prefix"]
LbPolicy = Literal["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "PEAK_EWMA"]
# PeerAuthentication modes: mTLS only, mTLS and plaintext on one port, plaintext only.
MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]
AuthzAction = Literal["ALLOW", "DENY", "AUDIT"]
# What a listener does with request header names that contain "_" (as Envoy's
# headers_with_underscores_action): a backend that reads "_" as "-" would see a second header.
UnderscoreHeaders = Literal["drop", "allow"]
# Span encodings a proxy exports: Zipkin v2 JSON, or OTLP/HTTP with the JSON encoding.
TraceFormat = Literal["zipkin", "otlp"]
# What a proxy does with a CORS preflight whose origin is not allowed (Istio's
# unmatchedPreflights): send it upstream as it came, or answer it without CORS headers.
UnmatchedPreflights = Literal["FORWARD", "IGNORE"]


class Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Base of every snapshot part: frozen, strict about unknown fields, compact when encoded."""


class StringMatch(Struct, frozen=True):
    """Match a string exactly, by prefix or by a regular expression (whole-string match)."""

    kind: MatchKind
    value: str
    ignore_case: bool = False


class HeaderMatch(Struct, frozen=True):
    """Match a request header; with no `match`, its presence; `invert` negates the result."""

    name: str
    match: StringMatch | None = None
    invert: bool = False


class QueryMatch(Struct, frozen=True):
    """Match a query parameter; with no `match`, its presence."""

    name: str
    match: StringMatch | None = None


class RouteMatch(Struct, frozen=True):
    """All conditions must hold. An empty match matches every request."""

    path: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    scheme: StringMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()
    query: tuple[QueryMatch, ...] = ()
    port: int | None = None


class HeaderOps(Struct, frozen=True):
    """Header changes: `set` replaces, `add` appends, `remove` deletes (names lowercase)."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


class WeightedCluster(Struct, frozen=True):
    """A cluster a route sends a share of its requests to."""

    cluster: str
    weight: int = 100
    request_headers: HeaderOps | None = None
    response_headers: HeaderOps | None = None


class RetryPolicy(Struct, frozen=True):
    """When and how often a failed request is tried again.

    `retry_on` holds Envoy/Istio condition names: 5xx, gateway-error, connect-failure, reset,
    retriable-4xx, retriable-status-codes, refused-stream. Backoff is jittered exponential.
    """

    attempts: int = 2
    per_try_timeout: float | None = None
    retry_on: tuple[str, ...] = ("connect-failure", "refused-stream", "gateway-error")
    retriable_status_codes: tuple[int, ...] = ()
    backoff_base: float = 0.025
    backoff_max: float = 0.25
    retry_non_idempotent: bool = False


class Mirror(Struct, frozen=True):
    """Copy a share of requests to another cluster, without waiting for its answer."""

    cluster: str
    percent: float = 100.0


class Fault(Struct, frozen=True):
    """Delay or fail a share of requests, to test how callers cope."""

    delay: float | None = None
    delay_percent: float = 100.0
    abort_status: int | None = None
    abort_percent: float = 100.0


class Rewrite(Struct, frozen=True):
    """Change the path prefix (or the whole path by regex) and the authority before forwarding."""

    prefix: str | None = None
    regex: str | None = None
    substitution: str | None = None
    authority: str | None = None


class Redirect(Struct, frozen=True):
    """Answer with a redirect."""

    status: int = 301
    path: str | None = None
    authority: str | None = None
    scheme: str | None = None
    port: int | None = None


class DirectResponse(Struct, frozen=True):
    """Answer with a fixed status and body."""

    status: int
    body: str = ""


class Cors(Struct, frozen=True):
    """Cross-origin answers for browsers (Istio's corsPolicy, as Envoy's CORS filter reads it).

    An origin is allowed when one of `allow_origins` matches it (case-sensitive; a match that
    takes the string `*` allows every origin). Methods and headers are sent as listed, joined by
    commas; a lone `*` answers a preflight with what it asked for.
    """

    allow_origins: tuple[StringMatch, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None
    """Seconds a browser may keep a preflight's answer; None: no Access-Control-Max-Age."""
    allow_credentials: bool = False
    unmatched_preflights: UnmatchedPreflights = "FORWARD"


class Route(Struct, frozen=True):
    """A match and what to do: forward to weighted clusters, redirect, or answer directly."""

    name: str
    match: RouteMatch = RouteMatch()
    clusters: tuple[WeightedCluster, ...] = ()
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    timeout: float | None = None
    retries: RetryPolicy | None = None
    mirrors: tuple[Mirror, ...] = ()
    fault: Fault | None = None
    rewrite: Rewrite | None = None
    request_headers: HeaderOps | None = None
    response_headers: HeaderOps | None = None
    cors: Cors | None = None


class VirtualHost(Struct, frozen=True):
    """The routes for a set of domains (`*` and `*.suffix` wildcards; `:port` optional)."""

    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]


class RouteTable(Struct, frozen=True):
    """The virtual hosts a listener routes with."""

    name: str
    virtual_hosts: tuple[VirtualHost, ...]


class Endpoint(Struct, frozen=True):
    """One address of a cluster."""

    address: str
    port: int
    weight: int = 1
    zone: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    healthy: bool = True
    identity: str = ""
    """The SPIFFE id of the sidecar in front of this endpoint: connect with mTLS and expect it.

    Empty: the endpoint takes plaintext (no sidecar, or its PeerAuthentication is DISABLE).
    """


class PoolLimits(Struct, frozen=True):
    """Connection pool limits: the circuit breaker, as Envoy and Istio define it."""

    max_connections: int = 1024
    max_pending: int = 1024
    max_requests: int = 1024
    max_requests_per_connection: int = 0
    max_retries: int = 3
    connect_timeout: float = 1.0
    idle_timeout: float = 60.0
    tcp_idle_timeout: float = 3600.0
    """An opaque TCP connection with no bytes either way for this long is closed (Istio's
    `connectionPool.tcp.idleTimeout`, one hour by default)."""


class OutlierDetection(Struct, frozen=True):
    """Eject an endpoint after consecutive failures, for a growing time."""

    consecutive_5xx: int = 5
    consecutive_gateway_errors: int = 0
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: int = 10


class HealthCheck(Struct, frozen=True):
    """Active HTTP health checks of each endpoint."""

    path: str = "/healthz"
    interval: float = 5.0
    timeout: float = 1.0
    healthy_threshold: int = 1
    unhealthy_threshold: int = 3


class HashPolicy(Struct, frozen=True):
    """What consistent hashing hashes: a header, a cookie, a query parameter or the source IP."""

    header: str | None = None
    cookie: str | None = None
    query_param: str | None = None
    source_ip: bool = False


class RetryBudget(Struct, frozen=True):
    """Retries may be at most `percent` of active requests (but `min_concurrency` always)."""

    percent: float = 20.0
    # Envoy's default is 3; with a handful of callers one dead replica can fail that many
    # requests at once, and a local mesh has no reason to refuse their retries.
    min_concurrency: int = 10


class ServiceLabels(Struct, frozen=True):
    """Who the cluster's endpoints are, for metric labels (Istio's destination_* labels)."""

    service: str = "unknown"
    service_name: str = "unknown"
    namespace: str = "unknown"
    workload: str = "unknown"
    version: str = "unknown"


class Cluster(Struct, frozen=True):
    """A set of endpoints and how to balance and protect them."""

    name: str
    endpoints: tuple[Endpoint, ...] = ()
    lb_policy: LbPolicy = "LEAST_REQUEST"
    hash_policy: HashPolicy | None = None
    limits: PoolLimits = PoolLimits()
    outlier_detection: OutlierDetection | None = None
    health_check: HealthCheck | None = None
    retry_budget: RetryBudget = RetryBudget()
    labels: ServiceLabels = ServiceLabels()


class ListenerLimits(Struct, frozen=True):
    """Bounds that protect a listener from slow, large or too many requests."""

    max_request_line: int = 8192
    max_header_bytes: int = 65536
    max_headers: int = 100
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    request_timeout: float = 300.0
    max_connections: int = 10000
    max_concurrent_requests: int = 5000
    max_request_body_buffer: int = 65536
    drain_timeout: float = 10.0
    http2_max_concurrent_streams: int = 100
    """Streams an HTTP/2 client may have open on one connection at once
    (SETTINGS_MAX_CONCURRENT_STREAMS)."""
    http2_stream_window: int = 65535
    """Request body an HTTP/2 stream may send before the proxy has passed it on (the stream's
    flow-control window)."""
    http2_connection_window: int = 1048576
    """The same for all the streams of one HTTP/2 connection together."""
    http2_max_resets: int = 200
    """Streams an HTTP/2 client may reset within `http2_reset_window` seconds; one more, and
    the connection is closed with GOAWAY ENHANCE_YOUR_CALM (the rapid reset attack)."""
    http2_reset_window: float = 10.0


class Certificate(Struct, frozen=True):
    """A certificate chain and key (PEM files the proxy reads), for the server names it serves.

    `hosts` are exact names or `*.suffix` wildcards; empty means any name.
    """

    cert_file: str
    key_file: str
    hosts: tuple[str, ...] = ()


class ListenerTls(Struct, frozen=True):
    """TLS termination: the certificate is chosen by the client's SNI; the first is the default."""

    certificates: tuple[Certificate, ...]


class InboundMtls(Struct, frozen=True):
    """Whether a sidecar's inbound listener takes mTLS from other sidecars, plaintext, or both.

    `ports` overrides the mode for requests to one app port (PeerAuthentication portLevelMtls).
    The connection is accepted when any mode would take it; a request to a port whose mode
    refuses the connection's kind is then refused.
    """

    mode: MtlsMode = "PERMISSIVE"
    ports: tuple[tuple[int, MtlsMode], ...] = ()


class SniRoute(Struct, frozen=True):
    """TLS connections whose ClientHello names one of `hosts` (exact, or `*.suffix`), to
    weighted clusters, the TLS unopened (a VirtualService `tls` rule: passthrough)."""

    hosts: tuple[str, ...]
    clusters: tuple[WeightedCluster, ...]


class TcpRoute(Struct, frozen=True):
    """What an opaque TCP listener does with each connection: bytes to one of weighted clusters.

    The cluster is picked per connection by weight (a VirtualService `tcp` route, or the
    service's own cluster); the bytes then flow both ways unread until either side closes.
    With `sni`, the listener first reads the TLS ClientHello and the first route that names its
    server name decides; `clusters` (which may be empty: closed) take the others.
    """

    clusters: tuple[WeightedCluster, ...]
    sni: tuple[SniRoute, ...] = ()
    destination_port: int = 0
    """The workload port AuthorizationPolicy `ports` and port-level mTLS see (inbound);
    0: the listener's own port."""
    connect_attempts: int = 3
    """Endpoints tried, one after another, when connecting fails (no byte is sent before)."""


class Listener(Struct, frozen=True):
    """An address the proxy accepts connections on, and the route table it uses.

    With `tcp`, the port is opaque: connections are carried as bytes (route_table is unused).
    """

    name: str
    address: str
    port: int
    role: Role
    route_table: str
    limits: ListenerLimits = ListenerLimits()
    tls: ListenerTls | None = None
    mtls: InboundMtls | None = None
    """Mesh mTLS with the proxy's own certificate (inbound listeners); None: plaintext only."""
    headers_with_underscores: UnderscoreHeaders = "drop"
    """Request headers and trailers whose name has "_": dropped (and counted), or passed on."""
    tcp: TcpRoute | None = None
    """Set on an opaque TCP port: where each connection's bytes go (proxy/tcp_proxy.py)."""


class Node(Struct, frozen=True):
    """Who this proxy speaks for: its workload, for metrics and headers."""

    workload: str = "unknown"
    namespace: str = "default"
    service_account: str = "default"
    cluster_domain: str = "cluster.local"
    service: str = "unknown"
    version: str = "unknown"


class AuthzSource(Struct, frozen=True):
    """Who a rule takes requests from (AuthorizationPolicy `from.source`); empty fields match all.

    Principals are SPIFFE ids without the scheme (`cluster.local/ns/NS/sa/SA`), request
    principals are `ISSUER/SUBJECT` of a JWT; both take Istio's `*` prefix and suffix wildcards.
    """

    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    request_principals: tuple[str, ...] = ()
    not_request_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()
    not_remote_ip_blocks: tuple[str, ...] = ()


class AuthzOperation(Struct, frozen=True):
    """What a rule's requests do (AuthorizationPolicy `to.operation`); empty fields match all."""

    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    not_ports: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


class AuthzCondition(Struct, frozen=True):
    """A `when` condition: the attribute `key` has one of `values` and none of `not_values`."""

    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


class AuthzRule(Struct, frozen=True):
    """Matches when any source, any operation and every condition match (empty: match all)."""

    sources: tuple[AuthzSource, ...] = ()
    operations: tuple[AuthzOperation, ...] = ()
    conditions: tuple[AuthzCondition, ...] = ()


class AuthzPolicy(Struct, frozen=True):
    """One AuthorizationPolicy that applies to this proxy; `name` is `NAMESPACE/NAME`.

    A policy matches a request when any rule does; with no rules it matches nothing.
    """

    name: str
    action: AuthzAction = "ALLOW"
    rules: tuple[AuthzRule, ...] = ()


class JwtProvider(Struct, frozen=True):
    """A JWT issuer whose tokens this proxy checks (a RequestAuthentication jwtRule)."""

    issuer: str
    audiences: tuple[str, ...] = ()
    jwks: str = ""
    """The JSON Web Key Set inline; when empty, fetched from `jwks_uri`."""
    jwks_uri: str = ""
    from_headers: tuple[tuple[str, str], ...] = ()
    """(lowercase header name, prefix); empty: `authorization` with prefix `Bearer `."""
    from_params: tuple[str, ...] = ()
    """Query parameters; with no headers and no params, also `access_token`."""
    from_cookies: tuple[str, ...] = ()
    forward_original_token: bool = False
    output_payload_to_header: str = ""
    output_claim_to_headers: tuple[tuple[str, str], ...] = ()
    """(lowercase header name, claim name)."""
    timeout: float = 5.0
    """How long a JWKS fetch may take."""
    policy: str = ""
    """The RequestAuthentication it comes from, `NAMESPACE/NAME`, for messages."""


class ApiPlan(Struct, frozen=True):
    """A plan of an API product: the routes it includes, its token bucket and its quota."""

    name: str
    routes: tuple[int, ...] | None = None
    """Indices into the product's routes; None: every route."""
    rate: float = 0.0
    """Requests per second the bucket refills with; 0: no rate limit."""
    burst: float = 0.0
    """The bucket's size (the rate limit's `burst`, else its `requests`)."""
    window: float = 1.0
    """The rate limit's `per` in seconds, for the RateLimit-Policy header."""
    quota: int = 0
    """Requests per `quota_period`; 0: no quota."""
    quota_period: str = ""
    """`hour`, `day`, `week` or `month` (calendar periods, UTC)."""
    fail_open: bool = True
    """Without an answer from the control plane, admit within this gateway's share alone
    (True) or refuse with 503 (False)."""
    max_request_bytes: int = 0
    """A larger request body is refused with 413; 0: no limit but the listener's."""


class ApiKeyHash(Struct, frozen=True):
    """One valid key of a consumer: its SHA-256 (hex) and, while it is rotated out, its end."""

    sha256: str
    consumer: str
    expires_at: float = 0.0
    """Seconds since the epoch after which the key is refused; 0: no end."""
    id: str = ""
    """The key's name in `gossamer apikey list` ("" for keys written in the manifest)."""


class ApiProductRoute(Struct, frozen=True):
    """Requests that belong to a product: a path match and, optionally, methods."""

    path: StringMatch
    methods: tuple[str, ...] = ()


class ApiProduct(Struct, frozen=True):
    """An ApiProduct a gateway enforces; `name` is `NAMESPACE/NAME`."""

    name: str
    routes: tuple[ApiProductRoute, ...]
    plans: tuple[ApiPlan, ...]
    consumers: tuple[tuple[str, str], ...] = ()
    """(consumer, plan name)."""
    keys: tuple[ApiKeyHash, ...] = ()
    hosts: tuple[str, ...] = ()
    """Hosts it applies on (without port); empty: every host."""
    key_header: str = "x-api-key"
    """Lowercase header name; "" when keys come only in the query."""
    key_param: str = ""
    docs_path: str = ""
    """Where the gateway serves the documentation page (and `PATH/openapi.json`); "" for none."""
    openapi: str = ""
    """The combined OpenAPI document, as JSON (apidocs/spec.py)."""
    validate_requests: bool = False
    """Requests are checked against `openapi` (apidocs/validate.py)."""
    request_headers: HeaderOps | None = None
    """Changes to the product's requests on their way upstream."""
    response_headers: HeaderOps | None = None
    """Changes to the product's responses."""


class Security(Struct, frozen=True):
    """Trust anchors, and the policies the proxy's inbound and gateway listeners enforce."""

    trust_domain: str = "cluster.local"
    roots: tuple[str, ...] = ()
    """PEM certificates that peers' chains must lead to (more than one while a root rotates)."""
    authorization: tuple[AuthzPolicy, ...] = ()
    jwt: tuple[JwtProvider, ...] = ()
    api_products: tuple[ApiProduct, ...] = ()
    """Enforced by gateway listeners only (docs/api-gateway.md)."""


class TracingProvider(Struct, frozen=True):
    """Where a proxy sends its spans (a TelemetryProvider), and the bounds of its batching."""

    name: str
    format: TraceFormat
    url: str
    """Zipkin: `http://HOST:9411/api/v2/spans`; OTLP over HTTP: `http://HOST:4318/v1/traces`."""
    batch_size: int = 256
    """Spans per POST; a batch this full is sent at once, without waiting for the interval."""
    flush_interval: float = 1.0
    """Seconds between sends of what the buffer holds."""
    timeout: float = 5.0
    """How long one POST may take, connection included; then its spans count as failed."""
    max_buffered_spans: int = 4096
    """Spans waiting to be sent; past it new spans are dropped (and counted)."""


class Tracing(Struct, frozen=True):
    """Spans of this proxy's requests (Istio's Telemetry `tracing`, resolved for the workload)."""

    sampling: float = 1.0
    """Percent of new traces sampled (Istio's randomSamplingPercentage, 1 by default); a
    request that comes with a sampling decision keeps it."""
    provider: TracingProvider | None = None
    """None: trace headers are continued and the sampling decided, but no span is reported."""


class Telemetry(Struct, frozen=True):
    """Access log and tracing settings."""

    access_log: bool = False
    access_log_path: str = "-"
    tracing: Tracing | None = None
    """None: tracing off; the proxy still continues trace headers (a new trace is sampled)."""


class Snapshot(Struct, frozen=True):
    """Everything one proxy runs, under one version."""

    version: str
    node: Node = Node()
    listeners: tuple[Listener, ...] = ()
    route_tables: tuple[RouteTable, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    telemetry: Telemetry = Telemetry()
    security: Security = Security()
