"""JwtAuthenticator and JwksCache: real keys, real tokens, a real HTTP server for jwksUri."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gossamer.security.jwt import JwksCache, JwtAuthenticator, JwtOutcome
from gossamer.snapshot import JwtProvider

ISSUER = "https://issuer.example.com"
RSA_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_B = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
MIN_REFETCH_S = 1.0
REFRESH_S = 60.0


def jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        public = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        public = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**public, "kid": kid, "use": "sig"}


def jwks(*keys: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


def make_token(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = RSA_A,
    kid: str = "a",
    *,
    alg: str = "RS256",
    expires_in: float = 300,
    **claims: Any,
) -> str:
    payload = {"iss": ISSUER, "sub": "alice", "exp": int(time.time() + expires_in), **claims}
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"api"), (b"Authorization", f"Bearer {token}".encode())]


class Clock:
    """A virtual monotonic clock for the cache's refresh and refetch intervals."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class JwksServer:
    """A one-route HTTP/1.1 server on 127.0.0.1 that serves a JWKS and counts fetches."""

    def __init__(self, document: bytes) -> None:
        self.document = document
        self.status = 200
        self.fetches = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/jwks.json"

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.fetches += 1
        body = self.document if self.status == 200 else b"unavailable"
        head = (
            f"HTTP/1.1 {self.status} X\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()
        await writer.wait_closed()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def cache(clock: Clock) -> AsyncIterator[JwksCache]:
    cache = JwksCache(
        refresh_interval_s=REFRESH_S, min_refetch_interval_s=MIN_REFETCH_S, clock=clock
    )
    yield cache
    await cache.close()


@pytest.fixture
async def server() -> AsyncIterator[JwksServer]:
    server = JwksServer(jwks(jwk(RSA_A, "a")))
    await server.start()
    yield server
    await server.close()


def remote(server: JwksServer, **fields: Any) -> JwtProvider:
    return JwtProvider(issuer=ISSUER, jwks_uri=server.url, **fields)


def inline(*keys: dict[str, Any], **fields: Any) -> JwtProvider:
    return JwtProvider(issuer=ISSUER, jwks=jwks(*keys).decode(), **fields)


async def settle(
    authn: JwtAuthenticator, headers: Sequence[tuple[bytes, bytes]], query: str = ""
) -> JwtOutcome:
    """Authenticate as the proxy does: on "pending", wait for the fetch and try once more, no
    longer patient."""
    outcome = authn.authenticate(headers, query)
    if outcome.status == "pending":
        assert outcome.wait is not None
        async with asyncio.timeout(2):
            await outcome.wait
        outcome = authn.authenticate(headers, query, patient=False)
    return outcome


def assert_invalid(outcome: JwtOutcome, error: str, token: str) -> None:
    assert (outcome.status, outcome.error) == ("invalid", error)
    for part in token.split("."):
        assert not part or part not in outcome.error


async def test_a_valid_token_names_its_principal_and_claims(
    server: JwksServer, cache: JwksCache
) -> None:
    authn = JwtAuthenticator([remote(server, audiences=("api",))], cache)
    token = make_token(aud=["api", "web"], azp="frontend", role="admin")

    first = authn.authenticate(bearer(token), "")
    outcome = await settle(authn, bearer(token))

    assert first.status == "pending"
    assert outcome.status == "ok"
    assert outcome.principal == f"{ISSUER}/alice"
    assert outcome.claims is not None
    assert outcome.claims["role"] == "admin"
    assert outcome.audiences == ("api", "web")
    assert outcome.presenter == "frontend"
    assert outcome.remove_headers == ("authorization",)
    assert server.fetches == 1


async def test_no_token_is_none_and_an_authenticator_without_providers_is_inactive(
    cache: JwksCache,
) -> None:
    authn = JwtAuthenticator([inline(jwk(RSA_A, "a"))], cache)

    assert authn.active
    assert authn.authenticate([(b"host", b"api")], "a=1") == JwtOutcome("none")
    assert authn.authenticate([(b"authorization", b"Basic dXNlcg==")], "") == JwtOutcome("none")
    assert not JwtAuthenticator([], cache).active


@pytest.mark.parametrize(
    ("expires_in", "nbf_in", "error"),
    [
        (-120, None, "Jwt is expired"),
        (300, 600, "Jwt not yet valid"),
    ],
)
async def test_time_claims_outside_the_clock_skew_are_refused(
    cache: JwksCache, expires_in: float, nbf_in: float | None, error: str
) -> None:
    authn = JwtAuthenticator([inline(jwk(RSA_A, "a"))], cache)
    claims: dict[str, Any] = {} if nbf_in is None else {"nbf": int(time.time() + nbf_in)}
    token = make_token(expires_in=expires_in, **claims)

    assert_invalid(authn.authenticate(bearer(token), ""), error, token)


async def test_sixty_seconds_of_clock_skew_are_forgiven(cache: JwksCache) -> None:
    authn = JwtAuthenticator([inline(jwk(RSA_A, "a"))], cache)
    token = make_token(expires_in=-30, nbf=int(time.time() + 30))

    assert authn.authenticate(bearer(token), "").status == "ok"


async def test_an_issuer_not_configured_is_refused(cache: JwksCache) -> None:
    authn = JwtAuthenticator([inline(jwk(RSA_A, "a"))], cache)
    token = make_token(iss="https://elsewhere.example.com")

    assert_invalid(authn.authenticate(bearer(token), ""), "Jwt issuer is not configured", token)


@pytest.mark.parametrize(
    ("aud", "status"),
    [
        ("web", "invalid"),
        (["web", "mobile"], "invalid"),
        (None, "invalid"),
        (["web", "api"], "ok"),
        ("https://api.example.com/", "ok"),
    ],
)
async def test_audiences_must_intersect_the_providers(
    cache: JwksCache, aud: str | list[str] | None, status: str
) -> None:
    provider = inline(jwk(RSA_A, "a"), audiences=("api", "http://api.example.com"))
    authn = JwtAuthenticator([provider], cache)
    claims: dict[str, Any] = {} if aud is None else {"aud": aud}
    token = make_token(**claims)

    outcome = authn.authenticate(bearer(token), "")

    assert outcome.status == status
    if status == "invalid":
        assert_invalid(outcome, "Audiences in Jwt are not allowed", token)


async def test_a_signature_by_another_key_with_the_same_kid_fails(cache: JwksCache) -> None:
    authn = JwtAuthenticator([inline(jwk(RSA_A, "a"))], cache)
    token = make_token(RSA_B, "a")

    assert_invalid(authn.authenticate(bearer(token), ""), "Jwt verification fails", token)


async def test_alg_none_is_refused(cache: JwksCache) -> None:
    authn = JwtAuthenticator([inline(jwk(RSA_A, "a"))], cache)
    token = unsigned({"alg": "none", "kid": "a"}, {"iss": ISSUER, "sub": "mallory"}) + "."

    assert_invalid(
        authn.authenticate(bearer(token), ""), "Jwt alg is missing or not allowed", token
    )


async def test_an_rsa_public_key_is_never_used_as_an_hmac_secret(cache: JwksCache) -> None:
    authn = JwtAuthenticator([inline(jwk(RSA_A, "a"))], cache)
    pem = RSA_A.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = unsigned({"alg": "HS256", "kid": "a"}, {"iss": ISSUER, "sub": "mallory"})
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(signature)}"

    assert_invalid(
        authn.authenticate(bearer(token), ""),
        "Jwks doesn't have key to match kid or alg from Jwt",
        token,
    )


async def test_a_malformed_token_is_refused_without_echoing_it(cache: JwksCache) -> None:
    authn = JwtAuthenticator([inline(jwk(RSA_A, "a"))], cache)

    assert_invalid(
        authn.authenticate(bearer("opaque-token"), ""),
        "Jwt is not in the form of Header.Payload.Signature",
        "opaque-token",
    )
    assert_invalid(
        authn.authenticate(bearer("bm90.anNvbg.x"), ""),
        "Jwt header or payload is not base64url-encoded JSON",
        "bm90.anNvbg.x",
    )


async def test_an_unknown_kid_refetches_and_picks_up_a_rotated_key(
    server: JwksServer, cache: JwksCache, clock: Clock
) -> None:
    authn = JwtAuthenticator([remote(server)], cache)
    assert (await settle(authn, bearer(make_token()))).status == "ok"
    server.document = jwks(jwk(RSA_B, "b"))
    clock.now += MIN_REFETCH_S
    rotated = make_token(RSA_B, "b")

    pending = authn.authenticate(bearer(rotated), "")
    outcome = await settle(authn, bearer(rotated))

    assert pending.status == "pending"
    assert outcome.status == "ok"
    assert server.fetches == 2


async def test_unknown_kids_refetch_at_most_once_per_interval(
    server: JwksServer, cache: JwksCache, clock: Clock
) -> None:
    authn = JwtAuthenticator([remote(server)], cache)
    assert (await settle(authn, bearer(make_token()))).status == "ok"
    clock.now += MIN_REFETCH_S
    ghost = make_token(kid="ghost")
    error = "Jwks doesn't have key to match kid or alg from Jwt"

    assert_invalid(await settle(authn, bearer(ghost)), error, ghost)
    assert_invalid(authn.authenticate(bearer(ghost), ""), error, ghost)
    assert server.fetches == 2
    clock.now += MIN_REFETCH_S
    assert authn.authenticate(bearer(ghost), "").status == "pending"


async def test_a_server_down_at_first_fetch_fails_requests_until_it_is_back(
    server: JwksServer, cache: JwksCache, clock: Clock
) -> None:
    server.status = 503
    authn = JwtAuthenticator([remote(server)], cache)
    token = make_token()

    assert_invalid(await settle(authn, bearer(token)), "Jwks remote fetch failed", token)
    assert_invalid(
        authn.authenticate(bearer(token), "", patient=False), "Jwks remote fetch failed", token
    )
    assert (server.fetches, cache.fetch_failures) == (1, 1)
    server.status = 200
    clock.now += MIN_REFETCH_S

    assert (await settle(authn, bearer(token))).status == "ok"
    assert server.fetches == 2


async def test_a_token_just_after_a_failed_first_fetch_waits_for_the_paced_retry(
    server: JwksServer, clock: Clock
) -> None:
    # The issuer was not up yet when the proxy started: its first fetch failed. A valid token
    # a moment later waits for the next fetch the pace allows (one, not more) instead of a 401.
    cache = JwksCache(min_refetch_interval_s=0.2, clock=clock)
    server.status = 503
    authn = JwtAuthenticator([remote(server)], cache)
    token = make_token()
    assert_invalid(await settle(authn, bearer(token)), "Jwks remote fetch failed", token)
    server.status = 200

    waiting = authn.authenticate(bearer(token), "")

    assert waiting.status == "pending"
    assert (await settle(authn, bearer(token))).status == "ok"
    assert server.fetches == 2
    await cache.close()


async def test_while_the_issuer_is_down_a_request_waits_for_one_retry_at_most(
    server: JwksServer, clock: Clock
) -> None:
    cache = JwksCache(min_refetch_interval_s=0.05, clock=clock)
    server.status = 503
    authn = JwtAuthenticator([remote(server)], cache)
    token = make_token()
    assert_invalid(await settle(authn, bearer(token)), "Jwks remote fetch failed", token)

    assert_invalid(await settle(authn, bearer(token)), "Jwks remote fetch failed", token)
    assert (server.fetches, cache.fetch_failures) == (2, 2)
    await cache.close()


async def test_a_stale_set_is_refreshed_in_the_background_and_kept_when_that_fails(
    server: JwksServer, cache: JwksCache, clock: Clock
) -> None:
    authn = JwtAuthenticator([remote(server)], cache)
    token = make_token()
    assert (await settle(authn, bearer(token))).status == "ok"
    server.status = 503
    clock.now += REFRESH_S

    assert authn.authenticate(bearer(token), "").status == "ok"
    async with asyncio.timeout(2):
        while cache.fetch_failures < 1:
            await asyncio.sleep(0.005)

    assert server.fetches == 2
    assert authn.authenticate(bearer(token), "").status == "ok"


async def test_a_fetch_that_hangs_ends_at_the_providers_timeout() -> None:
    async def never(uri: str, timeout: float) -> bytes:
        await asyncio.Event().wait()
        raise AssertionError

    cache = JwksCache(fetch=never)
    provider = JwtProvider(issuer=ISSUER, jwks_uri="https://keys.invalid/jwks", timeout=0.05)
    authn = JwtAuthenticator([provider], cache)
    token = make_token()

    assert_invalid(await settle(authn, bearer(token)), "Jwks remote fetch failed", token)
    await cache.close()


async def test_closing_the_cache_releases_requests_waiting_for_keys(
    server: JwksServer, cache: JwksCache
) -> None:
    authn = JwtAuthenticator([remote(server)], cache)
    token = make_token()
    outcome = authn.authenticate(bearer(token), "")

    await cache.close()

    assert outcome.wait is not None
    assert outcome.wait.done()
    assert_invalid(authn.authenticate(bearer(token), ""), "Jwks remote fetch failed", token)


async def test_snapshots_share_the_cache_and_do_not_refetch(
    server: JwksServer, cache: JwksCache
) -> None:
    token = make_token()
    assert (await settle(JwtAuthenticator([remote(server)], cache), bearer(token))).status == "ok"

    next_snapshot = JwtAuthenticator([remote(server, forward_original_token=True)], cache)

    assert next_snapshot.authenticate(bearer(token), "").status == "ok"
    assert server.fetches == 1


async def test_tokens_from_a_parameter_and_a_custom_header_with_prefix(cache: JwksCache) -> None:
    provider = inline(jwk(RSA_A, "a"), from_headers=(("x-jwt", "Token "),), from_params=("jwt",))
    authn = JwtAuthenticator([provider], cache)
    token = make_token()

    by_header = authn.authenticate([(b"X-JWT", f"token {token}".encode())], "")
    by_param = authn.authenticate([], f"a=1&jwt={token}")
    default_places = authn.authenticate(bearer(token), f"access_token={token}")

    assert (by_header.status, by_header.remove_headers, by_header.strip_params) == (
        "ok",
        ("x-jwt",),
        (),
    )
    assert (by_param.status, by_param.remove_headers, by_param.strip_params) == (
        "ok",
        (),
        ("jwt",),
    )
    assert default_places.status == "none"


async def test_the_default_parameter_and_a_cookie(cache: JwksCache) -> None:
    token = make_token()
    defaults = JwtAuthenticator([inline(jwk(RSA_A, "a"))], cache)
    cookies = JwtAuthenticator([inline(jwk(RSA_A, "a"), from_cookies=("session",))], cache)

    by_param = defaults.authenticate([], f"access_token={token}")
    by_cookie = cookies.authenticate([(b"cookie", f"theme=dark; session={token}".encode())], "")

    assert (by_param.status, by_param.strip_params) == ("ok", ("access_token",))
    assert (by_cookie.status, by_cookie.remove_headers) == ("ok", ())


async def test_the_first_token_found_decides(cache: JwksCache) -> None:
    authn = JwtAuthenticator([inline(jwk(RSA_A, "a"))], cache)
    expired = make_token(expires_in=-600)

    outcome = authn.authenticate(bearer(expired), f"access_token={make_token()}")

    assert_invalid(outcome, "Jwt is expired", expired)


async def test_a_token_must_come_where_its_issuer_looks(cache: JwksCache) -> None:
    other = JwtProvider(
        issuer="https://other.example.com",
        jwks=jwks(jwk(RSA_B, "b")).decode(),
        from_headers=(("x-other", ""),),
    )
    authn = JwtAuthenticator([inline(jwk(RSA_A, "a")), other], cache)
    token = make_token()

    outcome = authn.authenticate([(b"x-other", token.encode())], "")

    assert_invalid(outcome, "Jwt issuer is not configured", token)


@pytest.mark.parametrize(("forward", "removed"), [(False, ("authorization",)), (True, ())])
async def test_forward_original_token_keeps_the_header(
    cache: JwksCache, forward: bool, removed: tuple[str, ...]
) -> None:
    authn = JwtAuthenticator([inline(jwk(RSA_A, "a"), forward_original_token=forward)], cache)

    outcome = authn.authenticate(bearer(make_token()), "")

    assert (outcome.status, outcome.remove_headers) == ("ok", removed)


async def test_outputs_carry_the_payload_and_claims(cache: JwksCache) -> None:
    provider = inline(
        jwk(RSA_A, "a"),
        forward_original_token=True,
        output_payload_to_header="x-jwt-payload",
        output_claim_to_headers=(
            ("x-sub", "sub"),
            ("x-tier", "org.tier"),
            ("x-level", "level"),
            ("x-admin", "admin"),
            ("x-groups", "groups"),
            ("x-missing", "nope"),
            ("x-evil", "evil"),
            ("x-role", "https://example.com/role"),
        ),
    )
    authn = JwtAuthenticator([provider], cache)
    namespaced: dict[str, Any] = {"https://example.com/role": "reader"}
    token = make_token(
        org={"tier": "gold"}, level=3, admin=True, groups=["a"], evil="x\r\ny: 1", **namespaced
    )

    outcome = authn.authenticate(bearer(token), "")
    added = dict(outcome.add_headers)
    segment = added.pop("x-jwt-payload")
    payload = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))

    assert outcome.status == "ok"
    assert payload == outcome.claims
    assert added == {
        "x-sub": "alice",
        "x-tier": "gold",
        "x-level": "3",
        "x-admin": "true",
        "x-role": "reader",
    }
    outputs = ("x-jwt-payload", "x-sub", "x-tier", "x-level", "x-admin", "x-groups")
    assert outcome.remove_headers[:6] == outputs
    assert set(authn.authenticate([(b"x-sub", b"forged")], "").remove_headers) >= set(outputs)


async def test_inline_ec_keys_and_an_invalid_inline_set(cache: JwksCache) -> None:
    authn = JwtAuthenticator([inline(jwk(EC_KEY, "e"))], cache)
    broken = JwtAuthenticator([JwtProvider(issuer=ISSUER, jwks='{"keys": []}')], cache)
    token = make_token(EC_KEY, "e", alg="ES256")

    assert authn.authenticate(bearer(token), "").status == "ok"
    assert_invalid(
        authn.authenticate(bearer(make_token(RSA_A, "e")), ""),
        "Jwks doesn't have key to match kid or alg from Jwt",
        token,
    )
    assert_invalid(broken.authenticate(bearer(token), ""), "Jwks of the issuer is not valid", token)
