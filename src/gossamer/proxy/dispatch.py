"""Which way a request goes before any upstream is chosen: Envoy's router filter's decision.

The target parsed (origin or absolute form), the route matched, its CORS policy (a preflight is
answered here, before the guard, as Istio orders its filters: browsers send no credentials with
one), the security guard (mTLS mode, JWT, authorization policies), then a direct response, a
redirect, an injected fault, or `Exchange.forward`. Each step either answers locally or passes
the exchange on; `Exchange._dispatch` is the hook a subclass wraps (API products decide there).
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

from gossamer.proxy import local_reply as lr
from gossamer.proxy.cors import ORIGIN, REQUEST_METHOD, CompiledCors, header_value
from gossamer.proxy.forwarding import query, without_params
from gossamer.proxy.guard import JWT_DENIED, Refusal, RequestGuard
from gossamer.proxy.router import CompiledRoute, RequestFacts
from gossamer.security.authz import AuthzRequest

if TYPE_CHECKING:
    from gossamer.proxy.apiproduct import ProductGate
    from gossamer.proxy.exchange import Exchange
    from gossamer.security.jwt import JwtOutcome


def route_request(exchange: Exchange) -> None:
    """Route the request and send it on, or answer it locally."""
    runtime = exchange.runtime
    head = exchange.head
    target = head.target
    authority = b""
    if target[:1] != b"/":
        # Absolute form (explicit proxy mode): http://host[:port]/path
        scheme_end = target.find(b"://")
        if scheme_end > 0:
            rest = target[scheme_end + 3 :]
            slash = rest.find(b"/")
            authority, target = (rest, b"/") if slash < 0 else (rest[:slash], rest[slash:])
        elif target != b"*":
            exchange.local(400, "bad request target", lr.DOWNSTREAM_PROTOCOL_ERROR)
            return
    host_header = head.host
    if head.hosts > 1:
        exchange.local(400, "duplicate host header", lr.DOWNSTREAM_PROTOCOL_ERROR)
        return
    if not authority:
        if host_header is None and head.version == "1.1":
            exchange.local(400, "missing host header", lr.DOWNSTREAM_PROTOCOL_ERROR)
            return
        authority = host_header or b""
    exchange.authority = authority.decode("latin-1")
    query_at = target.find(b"?")
    path = target if query_at < 0 else target[:query_at]
    exchange.path = path.decode("latin-1")
    products = runtime.products
    if products is not None and products.documents and _documentation(exchange, products):
        return
    vhost = runtime.routes.host(exchange.authority)
    if vhost is None:
        exchange.local(404, "no route", lr.NO_ROUTE)
        return
    headers: dict[str, str] | None = None
    if vhost.by_path is not None:
        route = vhost.find_path(exchange.path)
    else:
        facts = RequestFacts(
            exchange.path, head.method.decode("latin-1"), exchange.authority, port=runtime.port
        )
        if vhost.needs_headers:
            headers = facts.headers = {
                n.lower().decode("latin-1"): v.decode("latin-1") for n, v in head.headers
            }
            facts.query = query(target, query_at)
        route = vhost.find(facts)
    if route is None:
        exchange.local(404, "no route", lr.NO_ROUTE)
        return
    exchange.route = route
    cors = route.cors
    if cors is not None and _cors_preflight(exchange, route, cors):
        return
    guard = runtime.guard
    if guard is not None:
        _guarded(exchange, guard, route, target, query_at=query_at, headers=headers)
        return
    exchange._dispatch(route, target)


def _cors_preflight(exchange: Exchange, route: CompiledRoute, cors: CompiledCors) -> bool:
    """Answer a CORS preflight (True), or note an allowed origin for the response to echo."""
    head = exchange.head
    origin = header_value(head.headers, ORIGIN)
    if not origin:
        return False
    allowed = cors.allows(origin)
    method = header_value(head.headers, REQUEST_METHOD) if head.method == b"OPTIONS" else b""
    if not method:
        if allowed:
            exchange.cors_origin = origin
        return False
    if not allowed and cors.forward_unmatched:
        return False
    # Counted for the route's destination, as Envoy has picked its cluster by now.
    _pick_cluster(exchange, route)
    extra = cors.preflight(origin, head.headers, method) if allowed else None
    exchange.local(200, "", "-", body=b"", extra=extra)
    return True


def _documentation(exchange: Exchange, products: ProductGate) -> bool:
    """Answer a GET for an API product's documentation page or spec; False when it is not one."""
    found = products.document(exchange.authority, exchange.path)
    if found is None:
        return False
    if exchange.head.method not in (b"GET", b"HEAD"):
        exchange.local(405, "the API documentation is read with GET", lr.DIRECT_RESPONSE)
        return True
    content_type, body = found
    extra = [(b"content-type", content_type), (b"cache-control", b"no-cache")]
    exchange.local(200, "", lr.DIRECT_RESPONSE, body=body, extra=extra)
    return True


def _guarded(
    exchange: Exchange,
    guard: RequestGuard,
    route: CompiledRoute,
    target: bytes,
    *,
    query_at: int,
    headers: dict[str, str] | None,
    patient: bool = True,
) -> None:
    """Let the request on only past the port's mTLS mode, its token and the policies."""
    if exchange.finished:
        return
    client = exchange.client
    port = _destination_port(exchange, route)
    refusal = guard.check_transport(client.secure, port)
    if refusal is not None:
        exchange.local(refusal.status, refusal.reason, refusal.flag)
        return
    params = target[query_at + 1 :].decode("latin-1") if query_at >= 0 else ""
    outcome = guard.authenticate(exchange.head.headers, params, patient=patient)
    if outcome is not None:
        if outcome.wait is not None:
            # The issuer's keys are being fetched: check again once they are here (and wait
            # no more if that fetch failed).
            outcome.wait.add_done_callback(
                lambda _: _guarded(
                    exchange,
                    guard,
                    route,
                    target,
                    query_at=query_at,
                    headers=headers,
                    patient=False,
                )
            )
            return
        if outcome.status == "invalid":
            challenge = b'Bearer realm="gossamer", error="invalid_token"'
            extra = [(b"www-authenticate", challenge)]
            exchange.local(401, f"jwt: {outcome.error}", JWT_DENIED, extra=extra)
            return
        if outcome.remove_headers or outcome.add_headers:
            _rewrite_auth_headers(exchange, outcome)
            headers = None
        if outcome.strip_params and query_at >= 0:
            # The token came in the query: it goes no further than the proxy.
            target = without_params(target, query_at, outcome.strip_params)
            query_at = target.find(b"?")
    authorizer = guard.authorizer
    if authorizer.active:
        if headers is None and authorizer.needs_headers:
            headers = {
                n.lower().decode("latin-1"): v.decode("latin-1") for n, v in exchange.head.headers
            }
        request = AuthzRequest(
            method=exchange.head.method.decode("latin-1"),
            path=exchange.path,
            host=exchange.authority,
            port=port,
            source_principal=client.principal.removeprefix("spiffe://"),
            source_ip=client.peer,
            headers=headers,
        )
        if outcome is not None and outcome.status == "ok":
            request.request_principal = outcome.principal
            request.claims = outcome.claims
        result = guard.authorize(request)
        if isinstance(result, Refusal):
            exchange.policy = result.policy
            exchange.local(result.status, result.reason, result.flag)
            return
        exchange.policy = result.policy
    exchange._dispatch(route, target)


def _destination_port(exchange: Exchange, route: CompiledRoute) -> int:
    """The workload's port a request is for: an inbound route's app port, else the
    listener's."""
    runtime = exchange.runtime
    if runtime.role == "inbound" and route.cluster_names:
        cluster = runtime.clusters.get(route.cluster_names[0])
        if cluster is not None and cluster.config.endpoints:
            return cluster.config.endpoints[0].port
    return runtime.port


def _rewrite_auth_headers(exchange: Exchange, outcome: JwtOutcome) -> None:
    """Drop the token's header (unless forwarded) and add the payload and claim headers."""
    removed = {name.encode("latin-1") for name in outcome.remove_headers}
    added = {name.encode("latin-1") for name, _ in outcome.add_headers}
    kept = [
        (name, value)
        for name, value in exchange.head.headers
        if name.lower() not in removed and name.lower() not in added
    ]
    kept.extend(
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in outcome.add_headers
    )
    exchange.head.headers = kept


def dispatch(exchange: Exchange, route: CompiledRoute, target: bytes) -> None:
    """After routing and the guard: a direct response, a redirect, a fault, or forwarding."""
    config = route.route
    if config.direct_response is not None:
        exchange.flags = lr.DIRECT_RESPONSE
        direct = config.direct_response
        exchange.local(direct.status, "", lr.DIRECT_RESPONSE, body=direct.body.encode())
        return
    if config.redirect is not None:
        _redirect(exchange, route, target)
        return
    fault = config.fault
    if fault is not None:
        # Independent, as in Envoy and Istio: one picked for both is delayed, then aborted.
        abort = fault.abort_status is not None and random.random() * 100 < fault.abort_percent
        if fault.delay is not None and random.random() * 100 < fault.delay_percent:
            exchange.flags = lr.DELAY_INJECTED
            loop = asyncio.get_running_loop()
            exchange.timer = loop.call_later(
                fault.delay, _after_delay, exchange, route, target, abort
            )
            return
        if abort:
            _abort_injected(exchange)
            return
    exchange.forward(route, target)


def _after_delay(exchange: Exchange, route: CompiledRoute, target: bytes, abort: bool) -> None:
    exchange.timer = None
    if exchange.finished:
        return
    if abort:
        _abort_injected(exchange)
    else:
        exchange.forward(route, target)


def _abort_injected(exchange: Exchange) -> None:
    route = exchange.route
    assert route is not None and route.route.fault is not None
    status = route.route.fault.abort_status
    assert status is not None
    _pick_cluster(exchange, route)
    exchange.local(status, "fault injected", lr.FAULT_INJECTED)


def _pick_cluster(exchange: Exchange, route: CompiledRoute) -> None:
    # As Envoy's router has picked the route's cluster before a filter answers: the metrics
    # and the span name the destination the request was for (not admitted: nothing was in
    # flight there).
    if route.cluster_names:
        exchange.cluster = exchange.runtime.clusters.get(route.cluster_names[route.pick()])


def _redirect(exchange: Exchange, route: CompiledRoute, target: bytes) -> None:
    redirect = route.route.redirect
    assert redirect is not None
    scheme = redirect.scheme or "http"
    authority = redirect.authority or exchange.authority
    if redirect.port is not None:
        authority = f"{authority.rsplit(':', 1)[0]}:{redirect.port}"
    path = redirect.path or target.decode("latin-1")
    location = f"{scheme}://{authority}{path}".encode("latin-1")
    exchange.local(redirect.status, "", "-", body=b"", extra=[(b"location", location)])
