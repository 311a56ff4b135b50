"""ApiProducts and their issued keys -> what a gateway enforces (`Security.api_products`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

from gossamer.apidocs import spec as openapi
from gossamer.apidocs.spec import product_documents
from gossamer.resources import Resource
from gossamer.resources.kinds.gossamer_kinds import ApiProduct as ApiProductResource
from gossamer.resources.kinds.gossamer_kinds import Plan
from gossamer.resources.kinds.istio_networking import Gateway
from gossamer.resources.kinds.istio_networking import StringMatch as UriMatch
from gossamer.resources.podconfig import ConfigSource
from gossamer.snapshot.durations import seconds
from gossamer.snapshot.model import (
    ApiKeyHash,
    ApiPlan,
    ApiProduct,
    ApiProductRoute,
    StringMatch,
)
from gossamer.snapshot.translate_catalog import labels_match
from gossamer.snapshot.translate_routes import header_ops

IssuedKey = tuple[str, str, str, float, str]
"""(product `NAMESPACE/NAME`, consumer, sha256, expires_at (0: none), id): a key that
`gossamer apikey create` issued, as the control plane stores it."""


def api_products(
    resources: Iterable[Resource],
    issued: Sequence[IssuedKey],
    now: float,
    gateway_labels: Mapping[str, str] | None = None,
) -> tuple[ApiProduct, ...]:
    """Every ApiProduct with its manifest keys and the issued keys still valid at `now`, and
    its documentation from the ConfigMaps among `resources`. Given a gateway's labels, only the
    products that apply on it (`served_on`)."""
    everything = list(resources)
    products = [r for r in everything if isinstance(r, ApiProductResource)]
    if gateway_labels is not None:
        selecting = {
            f"{r.namespace}/{r.name}"
            for r in everything
            if isinstance(r, Gateway) and labels_match(r.spec.selector, gateway_labels)
        }
        products = [product for product in products if served_on(product, selecting)]
    products.sort(key=lambda product: (product.namespace, product.name))
    source = ConfigSource.of(everything) if any(p.spec.openapi for p in products) else None
    return tuple(_product(product, issued, now, source) for product in products)


def served_on(product: ApiProductResource, gateways: frozenset[str] | set[str]) -> bool:
    """Whether a product applies on a gateway that the Gateways `gateways` (`NAMESPACE/NAME`)
    select: every gateway when it names none, as a VirtualService's `gateways`; a short name is
    in the product's namespace."""
    names = product.spec.gateways
    if not names:
        return True
    return any((n if "/" in n else f"{product.namespace}/{n}") in gateways for n in names)


def _documentation(resource: ApiProductResource, source: ConfigSource | None) -> tuple[str, str]:
    """(path, combined OpenAPI JSON), or ("", "") when the product has none or one of its
    documents cannot be read (validation names it: nothing is served half-way)."""
    spec = resource.spec
    docs = spec.openapi
    if docs is None or source is None:
        return "", ""
    documents, problems = product_documents(resource, source)
    if problems:
        return "", ""
    routes = [
        openapi.RouteMatch(*_match_parts(route.uri), tuple(m.upper() for m in route.methods))
        for route in spec.routes
    ]
    combined = openapi.combine(
        documents,
        routes,
        title=docs.title or resource.name,
        description=spec.description or "",
        hosts=spec.hosts,
        key_header=(spec.api_key.header or "").lower(),
        key_param=spec.api_key.query_param or "",
    )
    return docs.path.rstrip("/") or "/", json.dumps(combined, separators=(",", ":"))


def _match_parts(uri: UriMatch) -> tuple[str, str]:
    match = _match(uri)
    return match.kind, match.value


def _product(
    resource: ApiProductResource,
    issued: Sequence[IssuedKey],
    now: float,
    source: ConfigSource | None = None,
) -> ApiProduct:
    spec = resource.spec
    name = f"{resource.namespace}/{resource.name}"
    route_names = {route.name: index for index, route in enumerate(spec.routes) if route.name}
    consumers = {consumer.name for consumer in spec.consumers}
    keys = [
        ApiKeyHash(key.sha256, consumer.name)
        for consumer in spec.consumers
        for key in consumer.keys
        if key.sha256 is not None
    ]
    keys.extend(
        ApiKeyHash(sha256, consumer, expires_at, key_id)
        for product, consumer, sha256, expires_at, key_id in issued
        if product == name and consumer in consumers and (not expires_at or expires_at > now)
    )
    docs_path, combined = _documentation(resource, source)
    return ApiProduct(
        name=name,
        routes=tuple(
            ApiProductRoute(_match(route.uri), tuple(method.upper() for method in route.methods))
            for route in spec.routes
        ),
        plans=tuple(_plan(plan, route_names) for plan in spec.plans),
        consumers=tuple((consumer.name, consumer.plan) for consumer in spec.consumers),
        keys=tuple(keys),
        hosts=tuple(host.lower() for host in spec.hosts),
        key_header=(spec.api_key.header or "").lower(),
        key_param=spec.api_key.query_param or "",
        docs_path=docs_path,
        openapi=combined,
        validate_requests=bool(combined and spec.openapi and spec.openapi.validate_requests),
        request_headers=header_ops(spec.headers.request) if spec.headers else None,
        response_headers=header_ops(spec.headers.response) if spec.headers else None,
    )


def _match(uri: UriMatch) -> StringMatch:
    if uri.exact is not None:
        return StringMatch("exact", uri.exact)
    if uri.regex is not None:
        return StringMatch("regex", uri.regex)
    return StringMatch("prefix", uri.prefix if uri.prefix is not None else "/")


def _plan(plan: Plan, route_names: dict[str, int]) -> ApiPlan:
    rate = burst = 0.0
    window = 1.0
    if plan.rate_limit is not None:
        window = seconds(plan.rate_limit.per)
        rate = plan.rate_limit.requests / window
        burst = float(plan.rate_limit.burst or plan.rate_limit.requests)
    quota = plan.quota
    return ApiPlan(
        name=plan.name,
        routes=tuple(route_names[name] for name in plan.routes) if plan.routes else None,
        rate=rate,
        burst=burst,
        window=window,
        quota=quota.requests if quota is not None else 0,
        quota_period=quota.period if quota is not None else "",
        fail_open=plan.failure_mode == "open",
        max_request_bytes=plan.max_request_bytes or 0,
    )


def plans_of(products: Iterable[ApiProductResource]) -> dict[tuple[str, str], ApiPlan]:
    """Each (product `NAMESPACE/NAME`, consumer) to its plan, as gateways enforce it."""
    found: dict[tuple[str, str], ApiPlan] = {}
    for product in products:
        route_names = {r.name: i for i, r in enumerate(product.spec.routes) if r.name}
        plans = {plan.name: _plan(plan, route_names) for plan in product.spec.plans}
        name = f"{product.namespace}/{product.name}"
        for consumer in product.spec.consumers:
            if consumer.plan in plans:
                found[name, consumer.name] = plans[consumer.plan]
    return found
