"""Routes from VirtualService HTTP rules: matches, weighted destinations, and what they do."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus

import msgspec

from gossamer.resources.kinds.istio_networking import (
    CorsPolicy,
    Destination,
    HeaderOperations,
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRedirect,
    HTTPRetry,
    HTTPRewrite,
    HTTPRoute,
    VirtualService,
)
from gossamer.resources.kinds.istio_networking import StringMatch as IstioStringMatch
from gossamer.snapshot.durations import seconds
from gossamer.snapshot.model import (
    Cors,
    DirectResponse,
    Fault,
    HeaderMatch,
    HeaderOps,
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
from gossamer.snapshot.translate_catalog import Catalog, labels_match
from gossamer.snapshot.translate_clusters import cluster_name

# What Istio gives a route when its VirtualService says nothing about retries.
DEFAULT_RETRY = RetryPolicy(
    attempts=2,
    retry_on=(
        "connect-failure",
        "refused-stream",
        "unavailable",
        "cancelled",
        "retriable-status-codes",
    ),
    retriable_status_codes=(503,),
)
_STATUS_CODES = frozenset(status.value for status in HTTPStatus)
_CATCH_ALL = RouteMatch()
_ROOT_PREFIX = RouteMatch(path=StringMatch(kind="prefix", value="/"))


@dataclass(frozen=True, slots=True)
class RouteContext:
    """Where routes are being built: for the mesh or some gateways, and on which ports."""

    catalog: Catalog
    # `mesh` for a sidecar; `namespace/name` of each Gateway a gateway proxy runs.
    gateways: frozenset[str]
    # The ports a match's `port` may name for its routes to be kept here.
    ports: frozenset[int]
    # The service port being routed, for destinations that name no port.
    port: int | None = None


def virtual_service_routes(
    services: Sequence[VirtualService], context: RouteContext
) -> tuple[Route, ...]:
    """The routes of these VirtualServices, in order; nothing after the first catch-all."""
    routes: list[Route] = []
    for service in services:
        for index, rule in enumerate(service.spec.http):
            for route in _rule_routes(service, index, rule, context):
                routes.append(route)
                if route.match in (_CATCH_ALL, _ROOT_PREFIX):
                    return tuple(routes)
    return tuple(routes)


def default_route(cluster: str) -> Route:
    """The route of a host no VirtualService routes: everything to its cluster, Istio's retries."""
    return Route(
        name="default", clusters=(WeightedCluster(cluster=cluster),), retries=DEFAULT_RETRY
    )


def retry_policy(retry: HTTPRetry | None) -> RetryPolicy | None:
    """As Istio reads `retries`: the default when unset, none for 0 attempts, else overrides."""
    if retry is None:
        return DEFAULT_RETRY
    if not retry.attempts:
        return None
    policy = msgspec.structs.replace(DEFAULT_RETRY, attempts=retry.attempts)
    if retry.retry_on:
        conditions, codes = _retry_on(retry.retry_on)
        policy = msgspec.structs.replace(policy, retry_on=conditions, retriable_status_codes=codes)
    if retry.per_try_timeout is not None:
        policy = msgspec.structs.replace(policy, per_try_timeout=seconds(retry.per_try_timeout))
    if retry.backoff is not None:
        # Envoy caps the backoff at ten times its base.
        base = seconds(retry.backoff)
        policy = msgspec.structs.replace(policy, backoff_base=base, backoff_max=10 * base)
    return policy


def _retry_on(retry_on: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Conditions and status codes: Istio takes any HTTP status code in `retryOn` as one."""
    parts = [part.strip() for part in retry_on.split(",") if part.strip()]
    codes = tuple(int(part) for part in parts if _is_status(part))
    conditions = [part for part in parts if not _is_status(part)]
    if codes and "retriable-status-codes" not in conditions:
        conditions.append("retriable-status-codes")
    return tuple(conditions), codes


def _is_status(part: str) -> bool:
    return part.isdigit() and int(part) in _STATUS_CODES


def header_ops(operations: HeaderOperations | None) -> HeaderOps | None:
    """Header set/add/remove with lowercase names, or None when there is nothing to do."""
    if operations is None or not (operations.set or operations.add or operations.remove):
        return None
    return HeaderOps(
        set=tuple((name.lower(), value) for name, value in operations.set.items()),
        add=tuple((name.lower(), value) for name, value in operations.add.items()),
        remove=tuple(name.lower() for name in operations.remove),
    )


def _rule_routes(
    service: VirtualService, index: int, rule: HTTPRoute, context: RouteContext
) -> Iterator[Route]:
    template = _rule_action(service, rule, context)
    if template is None:
        return
    name = f"{service.namespace}/{service.name}/{rule.name or index}"
    if not rule.match:
        yield msgspec.structs.replace(template, name=name)
        return
    for position, match in enumerate(rule.match):
        if _applies(match, service.namespace, context):
            yield msgspec.structs.replace(
                template,
                name=f"{name}/{match.name or position}" if len(rule.match) > 1 else name,
                match=_route_match(match),
            )


def _rule_action(service: VirtualService, rule: HTTPRoute, context: RouteContext) -> Route | None:
    """What a rule does, as a route without name or match; None for what cannot be routed."""
    forwards = rule.redirect is None and rule.direct_response is None
    clusters = _weighted_clusters(service, rule, context) if forwards else ()
    # A delegate rule, or weights that send nothing anywhere.
    if forwards and not clusters:
        return None
    headers = rule.headers
    return Route(
        name="",
        clusters=clusters,
        redirect=_redirect(rule.redirect),
        direct_response=_direct_response(rule.direct_response) if rule.redirect is None else None,
        timeout=_timeout(rule.timeout) if forwards else None,
        retries=retry_policy(rule.retries) if forwards else None,
        mirrors=_mirrors(service, rule, context) if forwards else (),
        fault=_fault(rule.fault),
        rewrite=_rewrite(rule.rewrite) if forwards else None,
        request_headers=header_ops(headers.request) if headers else None,
        response_headers=header_ops(headers.response) if headers else None,
        # Envoy's CORS filter acts on routes that forward only, as do Istio's other route
        # policies: a redirect or a direct response is answered without it.
        cors=_cors(rule.cors_policy) if forwards else None,
    )


def _timeout(timeout: str | None) -> float | None:
    """A route timeout in seconds; Istio's 0s, like no timeout at all, means none."""
    return (seconds(timeout) or None) if timeout else None


def _applies(match: HTTPMatchRequest, namespace: str, context: RouteContext) -> bool:
    """Whether a match block can hold here: its port, gateways and source are this proxy's."""
    caller = context.catalog.caller
    gateways = {_gateway_key(name, namespace) for name in match.gateways}
    return (
        (match.port is None or match.port in context.ports)
        and (not gateways or bool(gateways & context.gateways))
        and labels_match(match.source_labels, caller.labels)
        and match.source_namespace in (None, caller.namespace)
    )


def _gateway_key(name: str, namespace: str) -> str:
    """`mesh`, or a Gateway named in a VirtualService as `namespace/name` (its own by default)."""
    if name == "mesh" or "/" in name:
        return name
    return f"{namespace}/{name}"


def _route_match(match: HTTPMatchRequest) -> RouteMatch:
    headers = [HeaderMatch(name.lower(), _string(value)) for name, value in match.headers.items()]
    headers.extend(
        HeaderMatch(name.lower(), _string(value), invert=True)
        for name, value in match.without_headers.items()
    )
    return RouteMatch(
        path=_string(match.uri, ignore_case=bool(match.ignore_uri_case)),
        method=_string(match.method),
        authority=_string(match.authority),
        scheme=_string(match.scheme),
        headers=tuple(headers),
        query=tuple(QueryMatch(name, _string(value)) for name, value in match.query_params.items()),
    )


def _string(match: IstioStringMatch | None, *, ignore_case: bool = False) -> StringMatch | None:
    """Istio's exact/prefix/regex; an empty match means "present" (None) where it may appear."""
    if match is None:
        return None
    if match.exact is not None:
        return StringMatch(kind="exact", value=match.exact, ignore_case=ignore_case)
    if match.prefix is not None:
        return StringMatch(kind="prefix", value=match.prefix, ignore_case=ignore_case)
    if match.regex is not None:
        return StringMatch(kind="regex", value=match.regex, ignore_case=ignore_case)
    return None


def _weighted_clusters(
    service: VirtualService, rule: HTTPRoute, context: RouteContext
) -> tuple[WeightedCluster, ...]:
    # A lone destination takes all traffic whatever its weight, as in Istio.
    single = len(rule.route) == 1
    clusters = []
    for target in rule.route:
        weight = 100 if single else target.weight or 0
        if weight <= 0:
            continue
        headers = target.headers
        clusters.append(
            WeightedCluster(
                cluster=_destination_cluster(target.destination, service.namespace, context),
                weight=weight,
                request_headers=header_ops(headers.request) if headers else None,
                response_headers=header_ops(headers.response) if headers else None,
            )
        )
    return tuple(clusters)


def _destination_cluster(destination: Destination, namespace: str, context: RouteContext) -> str:
    catalog = context.catalog
    host = catalog.resolve(destination.host, namespace)
    port = destination.port.number if destination.port else None
    if port is None:
        port = _default_port(host, context)
    return cluster_name(port, destination.subset or "", host)


def _default_port(host: str, context: RouteContext) -> int:
    """The port of a destination that names none: the one being routed, else the service's first."""
    service = context.catalog.by_host.get(host)
    ports = [port.number for port in service.http_ports] if service else []
    if context.port is not None and (context.port in ports or not ports):
        return context.port
    return ports[0] if ports else 80


def _mirrors(service: VirtualService, rule: HTTPRoute, context: RouteContext) -> tuple[Mirror, ...]:
    namespace = service.namespace
    if rule.mirror is not None:
        percent = 100.0
        if rule.mirror_percentage is not None:
            percent = rule.mirror_percentage.value
        elif rule.mirror_percent is not None:
            percent = rule.mirror_percent
        return (Mirror(_destination_cluster(rule.mirror, namespace, context), percent),)
    return tuple(
        Mirror(
            _destination_cluster(mirror.destination, namespace, context),
            mirror.percentage.value if mirror.percentage else 100.0,
        )
        for mirror in rule.mirrors
    )


def _fault(fault: HTTPFaultInjection | None) -> Fault | None:
    """Fixed delays and HTTP aborts; as in Istio, an unset percentage injects nothing."""
    delay = fault.delay if fault else None
    abort = fault.abort if fault else None
    delay_seconds = seconds(delay.fixed_delay) if delay and delay.fixed_delay else None
    status = abort.http_status if abort else None
    if delay_seconds is None and status is None:
        return None
    result = Fault(delay=delay_seconds, abort_status=status)
    if delay is not None and delay_seconds is not None:
        percent = delay.percentage.value if delay.percentage else float(delay.percent or 0)
        result = msgspec.structs.replace(result, delay_percent=percent)
    if abort is not None and status is not None:
        percent = abort.percentage.value if abort.percentage else 0.0
        result = msgspec.structs.replace(result, abort_percent=percent)
    return result


def _cors(policy: CorsPolicy | None) -> Cors | None:
    """As Istio translates it: `allowOrigins` if set, else the deprecated `allowOrigin` as exact
    matches; a max age in whole seconds; preflights from other origins forwarded by default."""
    if policy is None:
        return None
    if policy.allow_origins:
        matches = (_string(origin) for origin in policy.allow_origins)
        origins = tuple(match for match in matches if match is not None)
    else:
        origins = tuple(StringMatch(kind="exact", value=origin) for origin in policy.allow_origin)
    return Cors(
        allow_origins=origins,
        allow_methods=tuple(policy.allow_methods),
        allow_headers=tuple(policy.allow_headers),
        expose_headers=tuple(policy.expose_headers),
        max_age=int(seconds(policy.max_age)) if policy.max_age is not None else None,
        allow_credentials=bool(policy.allow_credentials),
        unmatched_preflights="IGNORE" if policy.unmatched_preflights == "IGNORE" else "FORWARD",
    )


def _rewrite(rewrite: HTTPRewrite | None) -> Rewrite | None:
    if rewrite is None:
        return None
    regex = rewrite.uri_regex_rewrite
    result = Rewrite(
        prefix=rewrite.uri or None,
        regex=regex.match if regex else None,
        substitution=regex.rewrite if regex else None,
        authority=rewrite.authority or None,
    )
    return None if result == Rewrite() else result


def _redirect(redirect: HTTPRedirect | None) -> Redirect | None:
    if redirect is None:
        return None
    return Redirect(
        status=redirect.redirect_code or 301,
        path=redirect.uri,
        authority=redirect.authority,
        scheme=redirect.scheme,
        port=redirect.port,
    )


def _direct_response(response: HTTPDirectResponse | None) -> DirectResponse | None:
    if response is None:
        return None
    body = response.body
    if body is None:
        return DirectResponse(status=response.status)
    if body.string is not None:
        return DirectResponse(status=response.status, body=body.string)
    return DirectResponse(status=response.status, body=_decoded(body.bytes or ""))


def _decoded(data: str) -> str:
    """A base64 body as text: the snapshot carries bodies as strings."""
    try:
        return base64.b64decode(data, validate=True).decode("utf-8", errors="replace")
    except binascii.Error:
        return data
