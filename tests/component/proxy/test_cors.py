"""CORS over real sockets: preflights the proxy answers itself, origins echoed on responses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import msgspec

from gossamer.snapshot import (
    AuthzPolicy,
    AuthzRule,
    Cors,
    Fault,
    HeaderOps,
    Security,
    Snapshot,
    StringMatch,
)

from .backend import Backend
from .harness import Running, cluster, snapshot, to

Run = Callable[[Snapshot], Awaitable[Running]]

SHOP = "https://shop.example.com"
EVIL = "https://evil.example.net"


def exact(*origins: str) -> tuple[StringMatch, ...]:
    return tuple(StringMatch(kind="exact", value=origin) for origin in origins)


def with_cors(backend: Backend, cors: Cors | None, **route: object) -> Snapshot:
    return snapshot([to("one", cors=cors, **route)], [cluster("one", backend.port)])


def preflight(origin: str, method: str = "PUT", **headers: str) -> dict[str, str]:
    return {"origin": origin, "access-control-request-method": method, **headers}


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {
        name: value
        for name, value in response.headers.items()
        if name.startswith("access-control-") or name == "vary"
    }


async def test_a_preflight_from_an_allowed_origin_is_answered_by_the_proxy(
    backend: Backend, run_proxy: Run, client: httpx.AsyncClient
) -> None:
    cors = Cors(
        allow_origins=exact(SHOP),
        allow_methods=("GET", "PUT"),
        allow_headers=("x-custom", "content-type"),
        expose_headers=("x-request-id",),
        max_age=600,
    )
    proxy = await run_proxy(with_cors(backend, cors))
    response = await client.options(f"{proxy.url}/items", headers=preflight(SHOP))
    assert response.status_code == 200
    assert response.content == b""
    assert cors_headers(response) == {
        "access-control-allow-origin": SHOP,
        "access-control-allow-methods": "GET,PUT",
        "access-control-allow-headers": "x-custom,content-type",
        "access-control-max-age": "600",
        "vary": "Origin",
    }
    assert backend.requests == []
    assert 'response_code="200",response_flags="-"} 1' in proxy.proxy.stats.prometheus()


async def test_with_credentials_the_origin_is_echoed_even_when_any_origin_is_allowed(
    backend: Backend, run_proxy: Run, client: httpx.AsyncClient
) -> None:
    cors = Cors(
        allow_origins=exact("*"),
        allow_methods=("GET",),
        expose_headers=("x-backend", "x-request-id"),
        allow_credentials=True,
    )
    proxy = await run_proxy(with_cors(backend, cors))
    answer = await client.options(proxy.url, headers=preflight(SHOP, "GET"))
    assert answer.headers["access-control-allow-origin"] == SHOP
    assert answer.headers["access-control-allow-credentials"] == "true"
    assert answer.headers["vary"] == "Origin"
    response = await client.get(proxy.url, headers={"origin": SHOP})
    assert response.status_code == 200
    assert cors_headers(response) == {
        "access-control-allow-origin": SHOP,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "x-backend,x-request-id",
        "vary": "Origin",
    }
    # The request itself went upstream as it came.
    (received,) = backend.requests
    assert received.header("origin") == SHOP


async def test_an_origin_not_allowed_gets_no_cors_headers(
    backend: Backend, run_proxy: Run, client: httpx.AsyncClient
) -> None:
    cors = Cors(allow_origins=exact(SHOP), allow_credentials=True, expose_headers=("x-a",))
    proxy = await run_proxy(with_cors(backend, cors))
    response = await client.get(proxy.url, headers={"origin": EVIL})
    assert response.status_code == 200
    assert cors_headers(response) == {}
    # Nor does a request without an Origin.
    assert cors_headers(await client.get(proxy.url)) == {}
    assert len(backend.requests) == 2


async def test_an_unmatched_preflight_is_forwarded_by_default(
    backend: Backend, run_proxy: Run, client: httpx.AsyncClient
) -> None:
    proxy = await run_proxy(with_cors(backend, Cors(allow_origins=exact(SHOP))))
    response = await client.options(proxy.url, headers=preflight(EVIL))
    assert response.headers["x-backend"] == "one"
    assert cors_headers(response) == {}
    (received,) = backend.requests
    assert received.method == "OPTIONS"
    assert received.header("origin") == EVIL
    assert received.header("access-control-request-method") == "PUT"


async def test_an_unmatched_preflight_is_answered_empty_when_told_to_ignore_it(
    backend: Backend, run_proxy: Run, client: httpx.AsyncClient
) -> None:
    cors = Cors(
        allow_origins=exact(SHOP),
        allow_methods=("GET",),
        allow_credentials=True,
        unmatched_preflights="IGNORE",
    )
    proxy = await run_proxy(with_cors(backend, cors))
    response = await client.options(proxy.url, headers=preflight(EVIL))
    assert response.status_code == 200
    assert "x-backend" not in response.headers
    assert cors_headers(response) == {}
    assert backend.requests == []


async def test_origins_match_by_prefix_and_by_whole_regex(
    backend: Backend, run_proxy: Run, client: httpx.AsyncClient
) -> None:
    cors = Cors(
        allow_origins=(
            StringMatch(kind="prefix", value="https://dev-"),
            StringMatch(kind="regex", value=r"https://[a-z]+\.example\.org"),
        ),
        allow_methods=("GET",),
    )
    proxy = await run_proxy(with_cors(backend, cors))
    allowed = ["https://dev-7.example.com", "https://api.example.org"]
    refused = ["https://prod.example.com", "https://api.example.org.evil.net", "http://dev-1"]
    for origin in allowed:
        response = await client.options(proxy.url, headers=preflight(origin, "GET"))
        assert response.headers.get("access-control-allow-origin") == origin, origin
    assert backend.requests == []
    for origin in refused:
        response = await client.get(proxy.url, headers={"origin": origin})
        assert "access-control-allow-origin" not in response.headers, origin


async def test_a_lone_star_allows_what_the_preflight_asks_for(
    backend: Backend, run_proxy: Run, client: httpx.AsyncClient
) -> None:
    cors = Cors(allow_origins=exact(SHOP), allow_methods=("*",), allow_headers=("*",))
    proxy = await run_proxy(with_cors(backend, cors))
    asked = preflight(SHOP, "PATCH", **{"access-control-request-headers": "x-a, x-b"})
    response = await client.options(proxy.url, headers=asked)
    assert response.headers["access-control-allow-methods"] == "PATCH"
    assert response.headers["access-control-allow-headers"] == "x-a, x-b"


async def test_the_proxy_sets_the_cors_headers_after_the_route_changes_them(
    backend: Backend, run_proxy: Run, client: httpx.AsyncClient
) -> None:
    # As Envoy's filter, after the router: an Allow-Origin set on the way down is replaced.
    ops = HeaderOps(set=(("access-control-allow-origin", "*"), ("x-kept", "yes")))
    config = with_cors(backend, Cors(allow_origins=exact(SHOP)), response_headers=ops)
    proxy = await run_proxy(config)
    response = await client.get(proxy.url, headers={"origin": SHOP})
    assert response.headers.get_list("access-control-allow-origin") == [SHOP]
    assert response.headers["x-kept"] == "yes"
    # Another origin meets the route's own header unchanged.
    other = await client.get(proxy.url, headers={"origin": EVIL})
    assert other.headers["access-control-allow-origin"] == "*"


async def test_a_local_reply_to_an_allowed_origin_carries_the_cors_headers(
    backend: Backend, run_proxy: Run, client: httpx.AsyncClient
) -> None:
    cors = Cors(allow_origins=exact(SHOP), allow_credentials=True)
    proxy = await run_proxy(with_cors(backend, cors, fault=Fault(abort_status=503)))
    response = await client.get(proxy.url, headers={"origin": SHOP})
    assert response.status_code == 503
    assert response.headers["access-control-allow-origin"] == SHOP
    assert response.headers["access-control-allow-credentials"] == "true"
    # A browser's preflight is answered before the fault, as Istio orders its filters.
    answer = await client.options(proxy.url, headers=preflight(SHOP))
    assert answer.status_code == 200


async def test_a_route_without_cors_passes_preflights_and_origins_through(
    backend: Backend, run_proxy: Run, client: httpx.AsyncClient
) -> None:
    proxy = await run_proxy(with_cors(backend, None))
    answer = await client.options(proxy.url, headers=preflight(SHOP))
    response = await client.get(proxy.url, headers={"origin": SHOP})
    assert [answer.headers["x-backend"], response.headers["x-backend"]] == ["one", "one"]
    assert cors_headers(answer) == cors_headers(response) == {}
    assert [r.method for r in backend.requests] == ["OPTIONS", "GET"]


async def test_a_preflight_is_answered_before_authorization_and_a_denial_stays_readable(
    backend: Backend, run_proxy: Run, client: httpx.AsyncClient
) -> None:
    # Istio puts the CORS filter before JWT and RBAC: browsers send no credentials with a
    # preflight, and a script may read the 403 its request then meets.
    deny_all = AuthzPolicy(name="shop/deny-all", action="DENY", rules=(AuthzRule(),))
    config = with_cors(backend, Cors(allow_origins=exact(SHOP), allow_methods=("GET",)))
    config = msgspec.structs.replace(
        config,
        listeners=tuple(msgspec.structs.replace(item, role="gateway") for item in config.listeners),
        security=Security(authorization=(deny_all,)),
    )
    proxy = await run_proxy(config)
    answer = await client.options(proxy.url, headers=preflight(SHOP, "GET"))
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-methods"] == "GET"
    denied = await client.get(proxy.url, headers={"origin": SHOP})
    assert denied.status_code == 403
    assert denied.headers["access-control-allow-origin"] == SHOP
    assert backend.requests == []
