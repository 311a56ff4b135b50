"""RequestAuthentication and AuthorizationPolicy on a gateway listener, over real sockets.

A real proxy runs in-process in front of the echoing `Backend`; tokens are signed with real
keys, and `jwks_uri` keys come from a real HTTP server. Each test asserts what a user sees: the
status, `x-gossamer-reason`, what reached the backend, and the access log line.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import httpx
import pytest

from gossamer.proxy import Proxy
from gossamer.security.jwt import JwksCache
from gossamer.snapshot import (
    AuthzCondition,
    AuthzOperation,
    AuthzPolicy,
    AuthzRule,
    AuthzSource,
    JwtProvider,
    Listener,
    RouteTable,
    Security,
    Snapshot,
    Telemetry,
    VirtualHost,
)

from .backend import Backend
from .harness import cluster, read_response, to
from .jwks_server import JwksServer, SigningKey, claims, jwks
from .waiting import LoopErrors, eventually

ISSUER = "https://auth.example.com"
AUDIENCE = "orders"
EC_KEY = SigningKey.es256("ec-1")
RSA_KEY = SigningKey.rs256("rsa-1")
ROTATED_KEY = SigningKey.es256("ec-2")
IMPOSTOR_KEY = SigningKey.es256("ec-1")
"""Claims the kid of `EC_KEY` but is another key: its signatures do not verify."""


class Gateway:
    """A proxy with one gateway listener whose access log goes to a string."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.log = io.StringIO()
        for handle in proxy.listeners.values():
            handle.runtime.log = self.log

    @property
    def port(self) -> int:
        return self.proxy.port("gateway")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.getvalue().splitlines()]


class Clock:
    """A monotonic clock the test moves, for the JWKS cache's refetch pacing."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Start = Callable[..., Awaitable[Gateway]]


def gateway_snapshot(
    backend: Backend,
    *,
    providers: Sequence[JwtProvider] = (),
    policies: Sequence[AuthzPolicy] = (),
) -> Snapshot:
    return Snapshot(
        version="auth",
        listeners=(
            Listener(
                name="gateway",
                address="127.0.0.1",
                port=0,
                role="gateway",
                route_table="gateway",
            ),
        ),
        route_tables=(
            RouteTable(
                name="gateway",
                virtual_hosts=(VirtualHost(name="api", domains=("*",), routes=(to("app"),)),),
            ),
        ),
        clusters=(cluster("app", backend.port),),
        telemetry=Telemetry(access_log=True),
        security=Security(authorization=tuple(policies), jwt=tuple(providers)),
    )


def inline_provider(*keys: SigningKey, **fields: Any) -> JwtProvider:
    fields.setdefault("audiences", (AUDIENCE,))
    return JwtProvider(issuer=ISSUER, jwks=jwks(*keys), policy="shop/jwt", **fields)


def remote_provider(server: JwksServer, **fields: Any) -> JwtProvider:
    fields.setdefault("audiences", (AUDIENCE,))
    return JwtProvider(issuer=ISSUER, jwks_uri=server.url, policy="shop/jwt", **fields)


def token(key: SigningKey = EC_KEY, **extra: Any) -> str:
    """A token for AUDIENCE from ISSUER, unless `extra` says otherwise."""
    extra.setdefault("aud", AUDIENCE)
    issuer = extra.pop("iss", ISSUER)
    return key.sign(claims(issuer, **extra))


def bearer(text: str) -> dict[str, str]:
    return {"authorization": f"Bearer {text}"}


def echoed(response: httpx.Response) -> dict[str, Any]:
    """What the backend received, as it echoed it back."""
    assert response.headers.get("x-backend") == "one", response.text
    body: dict[str, Any] = response.json()
    return body


def headers_of(received: dict[str, Any]) -> dict[str, list[str]]:
    """The received headers by lowercase name, every value kept."""
    found: dict[str, list[str]] = {}
    for name, value in received["headers"]:
        found.setdefault(name.lower(), []).append(value)
    return found


def decode_segment(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    proxies: list[Proxy] = []

    async def run(config: Snapshot, cache: JwksCache | None = None) -> Gateway:
        proxy = Proxy()
        if cache is not None:
            proxy.jwks = cache
        proxies.append(proxy)
        await proxy.apply(config)
        return Gateway(proxy)

    yield run
    for proxy in proxies:
        await proxy.close()


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    server = await JwksServer(RSA_KEY).start()
    yield server
    await server.stop()


# 1. No token


async def test_a_request_without_a_token_passes_when_no_policy_requires_one(
    backend: Backend, start: Start, client: httpx.AsyncClient
) -> None:
    provider = inline_provider(EC_KEY, output_claim_to_headers=(("x-user", "sub"),))
    gateway = await start(gateway_snapshot(backend, providers=(provider,)))

    response = await client.get(f"{gateway.url}/orders", headers={"x-user": "forged-admin"})

    assert response.status_code == 200
    received = headers_of(echoed(response))
    # A header the proxy fills in from verified claims is never the client's to set.
    assert "x-user" not in received
    assert "x-gossamer-reason" not in response.headers
    (entry,) = gateway.entries()
    assert entry["response_flags"] == "-"


# 2. Valid tokens


async def test_a_valid_inline_jwks_token_reaches_the_backend_without_the_token(
    backend: Backend, start: Start, client: httpx.AsyncClient
) -> None:
    provider = inline_provider(
        EC_KEY,
        output_payload_to_header="x-jwt-payload",
        output_claim_to_headers=(("x-user", "sub"), ("x-tier", "org.tier")),
    )
    gateway = await start(gateway_snapshot(backend, providers=(provider,)))
    sent = token(subject="bob", org={"tier": "gold"}, groups=["dev"])

    response = await client.get(
        f"{gateway.url}/orders", headers={**bearer(sent), "x-jwt-payload": "forged"}
    )

    assert response.status_code == 200
    received = headers_of(echoed(response))
    assert "authorization" not in received
    (payload,) = received["x-jwt-payload"]
    assert decode_segment(payload) == decode_segment(sent.split(".")[1])
    assert decode_segment(payload)["org"] == {"tier": "gold"}
    assert received["x-user"] == ["bob"]
    assert received["x-tier"] == ["gold"]
    assert sent not in gateway.log.getvalue()


async def test_forward_original_token_passes_the_authorization_header_on(
    backend: Backend, start: Start, client: httpx.AsyncClient
) -> None:
    provider = inline_provider(EC_KEY, forward_original_token=True)
    gateway = await start(gateway_snapshot(backend, providers=(provider,)))
    sent = token()

    response = await client.get(f"{gateway.url}/orders", headers=bearer(sent))

    assert response.status_code == 200
    assert headers_of(echoed(response))["authorization"] == [f"Bearer {sent}"]


async def test_a_token_checked_with_keys_from_a_jwks_uri_passes(
    backend: Backend, start: Start, client: httpx.AsyncClient, jwks_server: JwksServer
) -> None:
    provider = remote_provider(jwks_server, output_claim_to_headers=(("x-user", "sub"),))
    gateway = await start(gateway_snapshot(backend, providers=(provider,)))

    first = await client.get(f"{gateway.url}/a", headers=bearer(token(RSA_KEY, subject="carol")))
    second = await client.get(f"{gateway.url}/b", headers=bearer(token(RSA_KEY, subject="dave")))

    assert (first.status_code, second.status_code) == (200, 200)
    assert headers_of(echoed(first))["x-user"] == ["carol"]
    assert headers_of(echoed(second))["x-user"] == ["dave"]
    assert "authorization" not in headers_of(echoed(second))
    # Keys are fetched once, when the snapshot is applied, not per request.
    assert jwks_server.fetches == 1


async def test_a_token_in_the_query_is_not_forwarded_to_the_backend(
    backend: Backend, start: Start, client: httpx.AsyncClient
) -> None:
    # JwtOutcome.strip_params promises this: upstreams log queries, and tokens must not be logged.
    gateway = await start(gateway_snapshot(backend, providers=(inline_provider(EC_KEY),)))
    sent = token()

    response = await client.get(f"{gateway.url}/orders", params={"access_token": sent, "page": "2"})

    assert response.status_code == 200
    assert echoed(response)["target"] == "/orders?page=2"


# 3. Refused tokens


def expired() -> str:
    return token(expires_in=-600)


def wrong_issuer() -> str:
    return token(iss="https://evil.example.com")


def wrong_audience() -> str:
    return token(aud="billing")


def bad_signature() -> str:
    return token(IMPOSTOR_KEY)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (expired, "Jwt is expired"),
        (wrong_issuer, "Jwt issuer is not configured"),
        (wrong_audience, "Audiences in Jwt are not allowed"),
        (bad_signature, "Jwt verification fails"),
    ],
)
async def test_a_bad_token_is_refused_with_401_and_never_reaches_the_backend(
    backend: Backend,
    start: Start,
    client: httpx.AsyncClient,
    make: Callable[[], str],
    problem: str,
) -> None:
    gateway = await start(gateway_snapshot(backend, providers=(inline_provider(EC_KEY),)))
    sent = make()

    response = await client.get(f"{gateway.url}/orders", headers=bearer(sent))

    assert response.status_code == 401
    assert response.headers["x-gossamer-reason"] == f"jwt: {problem}"
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert backend.requests == []
    (entry,) = gateway.entries()
    assert (entry["response_code"], entry["response_flags"]) == (401, "JWT")
    assert entry["reason"] == f"jwt: {problem}"
    logged = gateway.log.getvalue()
    for part in sent.split("."):
        assert part not in logged
    assert sent not in response.text


# 4. Key rotation


async def test_a_token_from_a_rotated_key_passes_on_its_first_request(
    backend: Backend, start: Start, client: httpx.AsyncClient, jwks_server: JwksServer
) -> None:
    clock = Clock()
    cache = JwksCache(clock=clock)
    gateway = await start(
        gateway_snapshot(backend, providers=(remote_provider(jwks_server),)), cache
    )
    before = await client.get(f"{gateway.url}/", headers=bearer(token(RSA_KEY)))
    assert before.status_code == 200
    assert jwks_server.fetches == 1

    jwks_server.publish(RSA_KEY, ROTATED_KEY)
    clock.now += cache.min_refetch_interval_s
    rotated = await client.get(f"{gateway.url}/", headers=bearer(token(ROTATED_KEY)))
    again = await client.get(f"{gateway.url}/", headers=bearer(token(ROTATED_KEY)))

    assert (rotated.status_code, again.status_code) == (200, 200)
    assert jwks_server.fetches == 2
    # Within the refetch interval an unknown kid is refused at once, without another fetch.
    unknown = await client.get(
        f"{gateway.url}/", headers=bearer(ROTATED_KEY.sign(claims(ISSUER, aud=AUDIENCE), kid="x"))
    )
    assert unknown.status_code == 401
    assert unknown.headers["x-gossamer-reason"] == (
        "jwt: Jwks doesn't have key to match kid or alg from Jwt"
    )
    assert jwks_server.fetches == 2


# 5. Slow JWKS


async def test_while_keys_are_fetched_token_requests_wait_and_others_do_not(
    backend: Backend, start: Start, client: httpx.AsyncClient, jwks_server: JwksServer
) -> None:
    jwks_server.hold()
    gateway = await start(gateway_snapshot(backend, providers=(remote_provider(jwks_server),)))
    await eventually(lambda: jwks_server.fetches == 1, what="the first JWKS fetch")
    waiting = [
        asyncio.create_task(client.get(f"{gateway.url}/get", headers=bearer(token(RSA_KEY)))),
        asyncio.create_task(
            client.post(f"{gateway.url}/post", headers=bearer(token(RSA_KEY)), content=b"x" * 5000)
        ),
    ]

    anonymous = await client.get(f"{gateway.url}/anonymous")

    assert anonymous.status_code == 200
    assert [r.target for r in backend.requests] == ["/anonymous"]
    assert not any(task.done() for task in waiting)
    jwks_server.release()
    got, posted = await asyncio.gather(*waiting)
    assert (got.status_code, posted.status_code) == (200, 200)
    assert echoed(posted)["body"] == "x" * 5000
    assert jwks_server.fetches == 1


async def test_a_request_whose_client_leaves_while_keys_are_fetched_is_dropped(
    backend: Backend, start: Start, client: httpx.AsyncClient, jwks_server: JwksServer
) -> None:
    errors = LoopErrors().install(asyncio.get_running_loop())
    jwks_server.hold()
    gateway = await start(gateway_snapshot(backend, providers=(remote_provider(jwks_server),)))
    await eventually(lambda: jwks_server.fetches == 1, what="the first JWKS fetch")
    _, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(
        f"GET /gone HTTP/1.1\r\nhost: api\r\nauthorization: Bearer {token(RSA_KEY)}\r\n\r\n".encode()
    )
    await writer.drain()
    writer.close()
    await eventually(lambda: len(gateway.entries()) == 1, what="the abandoned request logged")
    jwks_server.release()

    after = await client.get(f"{gateway.url}/after", headers=bearer(token(RSA_KEY)))

    assert after.status_code == 200
    assert [r.target for r in backend.requests] == ["/after"]
    gone = gateway.entries()[0]
    assert (gone["path"], gone["response_flags"]) == ("/gone", "DC")
    assert errors.seen == []


async def test_when_the_jwks_uri_is_unreachable_tokens_fail_closed_and_others_pass(
    backend: Backend, start: Start, client: httpx.AsyncClient
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        refusing = unused.getsockname()[1]
    provider = JwtProvider(issuer=ISSUER, jwks_uri=f"http://127.0.0.1:{refusing}/jwks.json")
    gateway = await start(gateway_snapshot(backend, providers=(provider,)))

    with_token = await client.get(f"{gateway.url}/t", headers=bearer(token(RSA_KEY)))
    without = await client.get(f"{gateway.url}/n")

    assert with_token.status_code == 401
    assert with_token.headers["x-gossamer-reason"] == "jwt: Jwks remote fetch failed"
    assert without.status_code == 200
    assert [r.target for r in backend.requests] == ["/n"]


# 6. Claims in AuthorizationPolicy


ADMINS_ONLY = AuthzPolicy(
    name="shop/admins-only",
    action="ALLOW",
    rules=(
        AuthzRule(
            sources=(AuthzSource(request_principals=(f"{ISSUER}/*",)),),
            conditions=(AuthzCondition(key="request.auth.claims[groups]", values=("admin",)),),
        ),
    ),
)


async def test_an_allow_policy_on_claims_lets_in_only_the_matching_group(
    backend: Backend, start: Start, client: httpx.AsyncClient
) -> None:
    config = gateway_snapshot(
        backend, providers=(inline_provider(EC_KEY),), policies=(ADMINS_ONLY,)
    )
    gateway = await start(config)

    admin = await client.get(f"{gateway.url}/a", headers=bearer(token(groups=["admin"])))
    developer = await client.get(f"{gateway.url}/d", headers=bearer(token(groups=["dev"])))
    anonymous = await client.get(f"{gateway.url}/n")

    assert admin.status_code == 200
    for refused in (developer, anonymous):
        assert refused.status_code == 403
        assert refused.headers["x-gossamer-reason"] == "rbac denied"
    assert [r.target for r in backend.requests] == ["/a"]
    allowed, denied, unauthenticated = gateway.entries()
    assert (allowed["response_flags"], allowed["authz_policy"]) == ("-", "shop/admins-only")
    # No ALLOW policy matched, so none decided (authz.NO_ALLOW_MATCHED): the log names none.
    assert (denied["response_flags"], denied["authz_policy"]) == (
        "RBAC",
        "(no ALLOW policy matched)",
    )
    assert (unauthenticated["response_flags"], unauthenticated["authz_policy"]) == (
        "RBAC",
        "(no ALLOW policy matched)",
    )


# 7. DENY before ALLOW


async def test_a_deny_policy_on_a_path_wins_over_an_allow_all_policy(
    backend: Backend, start: Start, client: httpx.AsyncClient
) -> None:
    deny_admin = AuthzPolicy(
        name="shop/no-admin-paths",
        action="DENY",
        rules=(AuthzRule(operations=(AuthzOperation(paths=("/admin/*",)),)),),
    )
    allow_all = AuthzPolicy(name="shop/allow-all", action="ALLOW", rules=(AuthzRule(),))
    config = gateway_snapshot(
        backend, providers=(inline_provider(EC_KEY),), policies=(allow_all, deny_admin)
    )
    gateway = await start(config)
    admin = bearer(token(groups=["admin"]))

    denied = await client.get(f"{gateway.url}/admin/users", headers=admin)
    allowed = await client.get(f"{gateway.url}/orders", headers=admin)

    assert denied.status_code == 403
    assert denied.headers["x-gossamer-reason"] == "rbac denied"
    assert allowed.status_code == 200
    assert [r.target for r in backend.requests] == ["/orders"]
    denied_entry, allowed_entry = gateway.entries()
    assert denied_entry["authz_policy"] == "shop/no-admin-paths"
    assert denied_entry["response_flags"] == "RBAC"
    assert allowed_entry["authz_policy"] == "shop/allow-all"


# 8. Under concurrency


CONNECTIONS = 20
REQUESTS_PER_CONNECTION = 10
MALFORMED_AT = (7, 3)
"""(connection, request) that sends a malformed token."""


async def test_concurrent_token_requests_each_get_their_own_outcome(
    backend: Backend, start: Start
) -> None:
    provider = inline_provider(EC_KEY, output_claim_to_headers=(("x-user", "sub"),))
    gateway = await start(gateway_snapshot(backend, providers=(provider,)))

    async def one_connection(index: int) -> list[tuple[int, dict[str, str], bytes]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        answers = []
        try:
            for number in range(REQUESTS_PER_CONNECTION):
                user = f"user-{index}-{number}"
                sent = "not.a-token" if (index, number) == MALFORMED_AT else token(subject=user)
                writer.write(
                    f"GET /{user} HTTP/1.1\r\nhost: api\r\n"
                    f"authorization: Bearer {sent}\r\n\r\n".encode()
                )
                answers.append(await read_response(reader))
        finally:
            writer.close()
        return answers

    async with asyncio.timeout(5):
        results = await asyncio.gather(*(one_connection(i) for i in range(CONNECTIONS)))

    for index, answers in enumerate(results):
        for number, (status, headers, body) in enumerate(answers):
            if (index, number) == MALFORMED_AT:
                assert status == 401
                assert headers["x-gossamer-reason"] == (
                    "jwt: Jwt is not in the form of Header.Payload.Signature"
                )
                continue
            assert status == 200, body
            received = json.loads(body)
            user = f"user-{index}-{number}"
            assert received["target"] == f"/{user}"
            assert headers_of(received)["x-user"] == [user]
            assert "authorization" not in headers_of(received)
    total = CONNECTIONS * REQUESTS_PER_CONNECTION
    assert len(backend.requests) == total - 1
    flags = [entry["response_flags"] for entry in gateway.entries()]
    assert len(flags) == total
    assert flags.count("JWT") == 1
