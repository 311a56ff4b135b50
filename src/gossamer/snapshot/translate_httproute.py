"""Routes from Gateway API HTTPRoute rules, each with its rank in the spec's route precedence."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec

from gossamer.resources.gateway_api_binding import GatewayApiIndex
from gossamer.resources.hosts import service_fqdn
from gossamer.resources.kinds.gateway_api import BackendObjectReference
from gossamer.resources.kinds.gateway_api_routes import (
    HTTPCORSFilter,
    HTTPHeaderFilter,
    HTTPRequestMirrorFilter,
    HTTPRequestRedirectFilter,
    HTTPRoute,
    HTTPRouteFilter,
    HTTPRouteMatch,
    HTTPRouteRule,
    HTTPURLRewriteFilter,
)
from gossamer.snapshot.durations import seconds
from gossamer.snapshot.model import (
    Cors,
    DirectResponse,
    HeaderMatch,
    HeaderOps,
    MatchKind,
    Mirror,
    QueryMatch,
    Redirect,
    RetryPolicy,
    Rewrite,
    Route,
    RouteMatch,
    StringMatch,
    WeightedCluster,
)
from gossamer.snapshot.translate_clusters import cluster_name
from gossamer.snapshot.translate_routes import DEFAULT_RETRY

# Where requests for a backend that does not resolve go when others of the rule do: a cluster
# nothing defines, which answers 503 (the spec asks for 500; docs/gateway-api.md).
INVALID_BACKEND = "invalid-backend"
# What a rule with no backend to send anything to answers, as the spec requires.
_NO_BACKEND = DirectResponse(status=500, body="no valid backend for this route rule\n")
_PATH_ORDER = {"Exact": 0, "RegularExpression": 1, "PathPrefix": 2}
_VALUE_KINDS: dict[str, MatchKind] = {"Exact": "exact", "RegularExpression": "regex"}
_PATH_KINDS: dict[str, MatchKind] = {**_VALUE_KINDS, "PathPrefix": "path_prefix"}
# Where a redirect that changes the scheme but names no port goes: the scheme's own port.
_SCHEME_PORTS = {"http": 80, "https": 443}

Rank = tuple[int, int, int, int, int, bool, str, str, int, int]


@dataclass(frozen=True, slots=True)
class RankedRoute:
    """A route and its place among all routes of one host (lower first)."""

    rank: Rank
    route: Route


def http_route_routes(route: HTTPRoute, index: GatewayApiIndex) -> Iterator[RankedRoute]:
    """A route per match of each rule of the HTTPRoute, ranked by the spec's precedence."""
    for r, rule in enumerate(route.spec.rules):
        action = _rule_action(route, rule, index)
        name = f"httproute/{route.namespace}/{route.name}/{rule.name or r}"
        matches = rule.matches or [HTTPRouteMatch()]
        for m, match in enumerate(matches):
            yield RankedRoute(
                _rank(route, match, r, m),
                msgspec.structs.replace(
                    action,
                    name=f"{name}/{m}" if len(matches) > 1 else name,
                    match=route_match(match),
                ),
            )


def route_match(match: HTTPRouteMatch) -> RouteMatch:
    """The match as the proxy reads it: header names lowercase, query names as written."""
    path = match.path
    kind = (path.type if path else None) or "PathPrefix"
    value = (path.value if path else None) or "/"
    path_match = StringMatch(
        kind=_PATH_KINDS[kind],
        value=value,
    )
    return RouteMatch(
        path=path_match,
        method=StringMatch(kind="exact", value=match.method) if match.method else None,
        headers=tuple(
            HeaderMatch(h.name.lower(), StringMatch(_VALUE_KINDS[h.type or "Exact"], h.value))
            for h in match.headers
        ),
        query=tuple(
            QueryMatch(q.name, StringMatch(_VALUE_KINDS[q.type or "Exact"], q.value))
            for q in match.query_params
        ),
    )


def _rank(route: HTTPRoute, match: HTTPRouteMatch, rule: int, position: int) -> Rank:
    """Exact paths, then regular expressions (longest first: the spec leaves them to us), then
    the longest prefix; a method; most headers; most query parameters; the oldest route; its
    namespace/name; its order within the route."""
    kind = (match.path.type if match.path else None) or "PathPrefix"
    value = (match.path.value if match.path else None) or "/"
    created = route.metadata.creation_timestamp
    return (
        _PATH_ORDER[kind],
        -len(value),
        0 if match.method else 1,
        -len(match.headers),
        -len(match.query_params),
        created is None,
        created or "",
        f"{route.namespace}/{route.name}",
        rule,
        position,
    )


def _rule_action(route: HTTPRoute, rule: HTTPRouteRule, index: GatewayApiIndex) -> Route:
    """What the rule does, as a route without name or match."""
    filters: dict[str, HTTPRouteFilter] = {item.type: item for item in rule.filters}
    request_headers = _header_ops(_modifier(filters, "RequestHeaderModifier", request=True))
    response_headers = _header_ops(_modifier(filters, "ResponseHeaderModifier", request=False))
    redirect = filters.get("RequestRedirect")
    if redirect is not None and redirect.request_redirect is not None:
        return Route(
            name="",
            redirect=_redirect(redirect.request_redirect),
            request_headers=request_headers,
            response_headers=response_headers,
        )
    clusters = _clusters(route, rule, index)
    if not any(c.cluster != INVALID_BACKEND for c in clusters):
        return Route(name="", direct_response=_NO_BACKEND, response_headers=response_headers)
    timeouts = rule.timeouts
    cors = filters.get("CORS")
    rewrite = filters.get("URLRewrite")
    return Route(
        name="",
        clusters=clusters,
        timeout=(seconds(timeouts.request) or None) if timeouts and timeouts.request else None,
        retries=_retries(rule),
        mirrors=tuple(
            mirror
            for item in rule.filters
            if item.request_mirror is not None
            and (mirror := _mirror(route, item.request_mirror, index)) is not None
        ),
        rewrite=_rewrite(rewrite.url_rewrite) if rewrite and rewrite.url_rewrite else None,
        request_headers=request_headers,
        response_headers=response_headers,
        cors=_cors(cors.cors) if cors and cors.cors else None,
    )


def _modifier(
    filters: dict[str, HTTPRouteFilter], kind: str, *, request: bool
) -> HTTPHeaderFilter | None:
    item = filters.get(kind)
    if item is None:
        return None
    return item.request_header_modifier if request else item.response_header_modifier


def _header_ops(modifier: HTTPHeaderFilter | None) -> HeaderOps | None:
    if modifier is None or not (modifier.set or modifier.add or modifier.remove):
        return None
    return HeaderOps(
        set=tuple((h.name.lower(), h.value) for h in modifier.set),
        add=tuple((h.name.lower(), h.value) for h in modifier.add),
        remove=tuple(name.lower() for name in modifier.remove),
    )


def _clusters(
    route: HTTPRoute, rule: HTTPRouteRule, index: GatewayApiIndex
) -> tuple[WeightedCluster, ...]:
    """Each backend with weight above 0; one that does not resolve goes to INVALID_BACKEND."""
    clusters = []
    for backend in rule.backend_refs:
        weight = 1 if backend.weight is None else backend.weight
        if weight == 0:
            continue
        name = _backend_cluster(route, backend, index) or INVALID_BACKEND
        filters: dict[str, HTTPRouteFilter] = {item.type: item for item in backend.filters}
        request = _modifier(filters, "RequestHeaderModifier", request=True)
        response = _modifier(filters, "ResponseHeaderModifier", request=False)
        clusters.append(
            WeightedCluster(
                cluster=name,
                weight=weight,
                request_headers=_header_ops(request),
                response_headers=_header_ops(response),
            )
        )
    return tuple(clusters)


def _backend_cluster(
    route: HTTPRoute, backend: BackendObjectReference, index: GatewayApiIndex
) -> str | None:
    if index.backend_problem(route, backend) is not None or backend.port is None:
        return None
    host = service_fqdn(backend.name, backend.namespace or route.namespace)
    return cluster_name(backend.port, "", host)


def _retries(rule: HTTPRouteRule) -> RetryPolicy | None:
    """Istio's default retries, unless the rule's `retry` says otherwise; a backendRequest
    timeout bounds each try."""
    policy = DEFAULT_RETRY
    retry = rule.retry
    if retry is not None:
        if retry.attempts == 0:
            return None
        if retry.attempts is not None:
            policy = msgspec.structs.replace(policy, attempts=retry.attempts)
        if retry.codes:
            policy = msgspec.structs.replace(
                policy,
                retry_on=("connect-failure", "refused-stream", "retriable-status-codes"),
                retriable_status_codes=tuple(retry.codes),
            )
        if retry.backoff is not None:
            base = seconds(retry.backoff)
            policy = msgspec.structs.replace(policy, backoff_base=base, backoff_max=10 * base)
    timeouts = rule.timeouts
    if timeouts is not None and timeouts.backend_request is not None:
        per_try = seconds(timeouts.backend_request) or None
        policy = msgspec.structs.replace(policy, per_try_timeout=per_try)
    return policy


def _mirror(
    route: HTTPRoute, mirror: HTTPRequestMirrorFilter, index: GatewayApiIndex
) -> Mirror | None:
    cluster = _backend_cluster(route, mirror.backend_ref, index)
    if cluster is None:
        return None
    percent = 100.0
    if mirror.fraction is not None:
        percent = 100.0 * mirror.fraction.numerator / (mirror.fraction.denominator or 100)
    elif mirror.percent is not None:
        percent = float(mirror.percent)
    return Mirror(cluster, percent)


def _redirect(redirect: HTTPRequestRedirectFilter) -> Redirect:
    port = redirect.port
    if port is None and redirect.scheme is not None:
        port = _SCHEME_PORTS[redirect.scheme]
    path = redirect.path
    return Redirect(
        status=redirect.status_code or 302,
        path=path.replace_full_path if path and path.type == "ReplaceFullPath" else None,
        authority=redirect.hostname,
        scheme=redirect.scheme,
        port=port,
    )


def _rewrite(rewrite: HTTPURLRewriteFilter) -> Rewrite | None:
    path = rewrite.path
    prefix = regex = substitution = None
    if path is not None and path.type == "ReplacePrefixMatch":
        prefix = path.replace_prefix_match
    elif path is not None and path.replace_full_path is not None:
        regex, substitution = "^.*$", path.replace_full_path.replace("\\", "\\\\")
    result = Rewrite(
        prefix=prefix, regex=regex, substitution=substitution, authority=rewrite.hostname
    )
    return None if result == Rewrite() else result


def _cors(cors: HTTPCORSFilter) -> Cors:
    return Cors(
        allow_origins=tuple(_origin(origin) for origin in cors.allow_origins),
        allow_methods=tuple(cors.allow_methods),
        allow_headers=tuple(cors.allow_headers),
        expose_headers=tuple(cors.expose_headers),
        max_age=cors.max_age if cors.max_age is not None else 5,
        allow_credentials=bool(cors.allow_credentials),
    )


def _origin(origin: str) -> StringMatch:
    """`*` allows any origin; a `*` inside one (`https://*.example.com`) stands for any text."""
    if origin == "*" or "*" not in origin:
        return StringMatch(kind="exact", value=origin)
    return StringMatch(kind="regex", value=".+".join(re.escape(part) for part in origin.split("*")))
