"""RequestAuthentication on the proxy: find a request's JWT and check it against its issuer's keys.

One `JwtAuthenticator` is compiled per snapshot from its `JwtProvider`s; the key sets fetched
from `jwks_uri`s come from the `JwksCache` (security/jwks.py), which outlives snapshots.
Signatures and time claims are checked by PyJWT.

Choices where Istio/Envoy leave room, or where this module departs from them on purpose:

- One token decides. Locations are searched headers first (in provider order), then query
  parameters, then cookies; the first token found is the one checked. Istio would check every
  token present.
- A token is checked only by providers that list the location it came in and whose issuer is
  the token's unverified `iss`; anything else is "Jwt issuer is not configured" (as Envoy does).
- `exp` and `nbf` get `CLOCK_SKEW_S` (60 s, Envoy's default) of leeway; `iat` is not checked.
- The token's `alg` selects nothing by itself: it must be one the key can verify (security/jwks.py
  says which those are), and never `none`.
- Audiences compare with the `http://`/`https://` scheme and a trailing `/` ignored, as Envoy's.
- Without `forward_original_token`, a token's header is removed and so is its query parameter
  (`strip_params`; Envoy leaves parameters in place, but the query is logged upstream and the
  token should not be); a cookie is left as is, since dropping the header would drop others.
- Headers named by any `output_payload_to_header` or `output_claim_to_headers` are always in
  `remove_headers`, also when there is no token, so a client cannot forge what upstreams trust.
- A JWKS that cannot be parsed fails closed for its provider only: its tokens are rejected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

import jwt
from jwt.types import Options

from gossamer.security.jwks import JwksCache, KeySet, VerificationKey
from gossamer.snapshot import JwtProvider

__all__ = ["JwksCache", "JwtAuthenticator", "JwtOutcome"]

log = logging.getLogger(__name__)

CLOCK_SKEW_S = 60.0
_DEFAULT_HEADER = ("authorization", "Bearer ")
_DEFAULT_PARAM = "access_token"
_MISSING = object()
_CONTROL_CHARACTERS = frozenset(chr(code) for code in (*range(32), 127)) - {"\t"}
# Signature, exp and nbf are PyJWT's; iss was matched before and audiences are compared here.
_DECODE_OPTIONS: Options = {
    "verify_aud": False,
    "verify_iss": False,
    "verify_iat": False,
    "enforce_minimum_key_length": True,
}

FETCH_FAILED = "Jwks remote fetch failed"
NO_MATCHING_KEY = "Jwks doesn't have key to match kid or alg from Jwt"
VERIFICATION_FAILED = "Jwt verification fails"


@dataclass(frozen=True, slots=True)
class JwtOutcome:
    """What authenticating one request decided, and the header edits that go with it.

    The caller applies `remove_headers` before `add_headers` (set, replacing any value the
    client sent) and drops every `strip_params` parameter from the query. On "pending" it
    awaits `wait` (it resolves when the JWKS fetch ends, within the provider's timeout, and
    never raises) and calls `authenticate` again.
    """

    status: Literal["none", "ok", "invalid", "pending"]
    principal: str = ""
    """`ISS/SUB`, as AuthorizationPolicy's requestPrincipals match it."""
    claims: Mapping[str, object] | None = None
    audiences: tuple[str, ...] = ()
    presenter: str = ""
    """The `azp` claim."""
    error: str = ""
    """Why the token was refused, fit for a 401 body; it never contains the token."""
    remove_headers: tuple[str, ...] = ()
    add_headers: tuple[tuple[str, str], ...] = ()
    strip_params: tuple[str, ...] = ()
    wait: asyncio.Future[None] | None = None


class _Provider:
    """A `JwtProvider` compiled: its keys or where to fetch them, and its outputs."""

    __slots__ = ("audiences", "claim_headers", "keys", "source")

    def __init__(self, source: JwtProvider) -> None:
        self.source = source
        self.audiences = frozenset(_normalize_audience(aud) for aud in source.audiences)
        self.claim_headers = tuple(
            (header, claim, tuple(claim.split(".")))
            for header, claim in source.output_claim_to_headers
        )
        self.keys: KeySet | None = None
        if source.jwks:
            try:
                self.keys = KeySet.parse(source.jwks)
            except ValueError as exc:
                log.warning("inline JWKS of issuer %s (%s): %s", source.issuer, source.policy, exc)

    def accepts(self, audiences: tuple[str, ...]) -> bool:
        """Whether a token for these audiences is for us: any of them listed, or none listed."""
        return not self.audiences or not self.audiences.isdisjoint(
            map(_normalize_audience, audiences)
        )

    def outputs(self, payload: dict[str, Any], payload_segment: str) -> tuple[tuple[str, str], ...]:
        """The headers `output_payload_to_header` and `output_claim_to_headers` ask for."""
        added: list[tuple[str, str]] = []
        if self.source.output_payload_to_header:
            added.append((self.source.output_payload_to_header, payload_segment))
        for header, claim, path in self.claim_headers:
            value = _claim_text(payload, claim, path)
            if value is not None:
                added.append((header, value))
        return tuple(added)


def _normalize_audience(audience: str) -> str:
    for scheme in ("https://", "http://"):
        if audience.startswith(scheme):
            audience = audience[len(scheme) :]
            break
    return audience.removesuffix("/")


def _claim_text(payload: Mapping[str, Any], claim: str, path: tuple[str, ...]) -> str | None:
    """A string, integer or boolean claim as header text, else None.

    A claim named with dots is first looked up whole, since namespaced claims are often URLs
    (`https://example.com/role`), then as a path into nested objects (`org.tier`).
    """
    value: Any = payload.get(claim, _MISSING)
    if value is _MISSING:
        value = payload
        for name in path:
            if not isinstance(value, dict) or name not in value:
                return None
            value = value[name]
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | str):
        text = str(value)
    else:
        return None
    # Claims are the issuer's data; a line break would let them write headers of their own.
    return None if not _CONTROL_CHARACTERS.isdisjoint(text) else text


LocationKind = Literal["header", "param", "cookie"]
_SEARCH_ORDER: tuple[LocationKind, ...] = ("header", "param", "cookie")


@dataclass(frozen=True, slots=True)
class _Location:
    """One place a token may be, and the providers that look there, in search order."""

    kind: LocationKind
    name: str
    prefix: bytes
    """Lowercase, matched case-insensitively: `Bearer` is an auth scheme, and those are."""
    providers: tuple[_Provider, ...]
    rank: int


class JwtAuthenticator:
    """The RequestAuthentication of one snapshot: where tokens are and who may issue them."""

    __slots__ = (
        "_cache",
        "_cookies",
        "_headers",
        "_none",
        "_output_headers",
        "_param_probes",
        "_params",
        "active",
    )

    def __init__(self, providers: Sequence[JwtProvider], cache: JwksCache) -> None:
        self._cache = cache
        self.active = bool(providers)
        compiled = [_Provider(source) for source in providers]
        locations = _locations(compiled)
        self._headers: dict[bytes, tuple[_Location, ...]] = {}
        for location in locations:
            if location.kind == "header":
                key = location.name.encode("latin-1")
                self._headers[key] = (*self._headers.get(key, ()), location)
        self._params = tuple(location for location in locations if location.kind == "param")
        self._param_probes = tuple(f"{location.name}=" for location in self._params)
        self._cookies = {loc.name: loc for loc in locations if loc.kind == "cookie"}
        outputs = dict.fromkeys(
            name
            for provider in compiled
            for name in (
                provider.source.output_payload_to_header,
                *(header for header, _ in provider.source.output_claim_to_headers),
            )
            if name
        )
        self._output_headers = tuple(outputs)
        self._none = JwtOutcome("none", remove_headers=self._output_headers)
        self._start_fetches(compiled)

    def __repr__(self) -> str:
        return f"<JwtAuthenticator {len(self._headers)} headers, {len(self._params)} params>"

    def _start_fetches(self, providers: Sequence[_Provider]) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # compiled off the loop: the first token for each provider starts its fetch
        for provider in providers:
            if not provider.source.jwks and provider.source.jwks_uri:
                self._cache.prefetch(provider.source.jwks_uri, provider.source.timeout)

    def authenticate(
        self, headers: Sequence[tuple[bytes, bytes]], query: str, *, patient: bool = True
    ) -> JwtOutcome:
        """Check the request's token, if it carries one; "none" when it carries none.

        `patient`: with no keys yet and a fetch failed a moment ago, wait for the next fetch the
        pace allows ("pending"); the check after that wait passes False, so that a request
        waits for one retry at most."""
        found = self._find_token(headers, query)
        if found is None:
            return self._none
        token, location = found
        return self._check(token, location, patient)

    def _find_token(
        self, headers: Sequence[tuple[bytes, bytes]], query: str
    ) -> tuple[str, _Location] | None:
        best: tuple[str, _Location] | None = None
        cookie_values: list[bytes] = []
        for name, value in headers:
            lower = name.lower()
            locations = self._headers.get(lower)
            if locations is not None:
                for location in locations:
                    if best is not None and best[1].rank <= location.rank:
                        break
                    token = _after_prefix(value, location.prefix)
                    if token:
                        best = (token, location)
                        break
            elif self._cookies and lower == b"cookie":
                cookie_values.append(value)
        if best is not None:
            return best
        if query and any(probe in query for probe in self._param_probes):
            best = self._find_param(query)
            if best is not None:
                return best
        return self._find_cookie(cookie_values) if cookie_values else None

    def _find_param(self, query: str) -> tuple[str, _Location] | None:
        values: dict[str, str] = {}
        for name, value in parse_qsl(query):
            values.setdefault(name, value)
        for location in self._params:
            token = values.get(location.name, "").strip()
            if token:
                return token, location
        return None

    def _find_cookie(self, cookie_values: list[bytes]) -> tuple[str, _Location] | None:
        best: tuple[str, _Location] | None = None
        for header in cookie_values:
            for pair in header.decode("latin-1").split(";"):
                name, _, value = pair.strip().partition("=")
                location = self._cookies.get(name)
                token = value.strip().strip('"')
                if location is None or not token:
                    continue
                if best is None or location.rank < best[1].rank:
                    best = (token, location)
        return best

    def _check(self, text: str, location: _Location, patient: bool) -> JwtOutcome:
        if text.count(".") != 2:
            return _invalid("Jwt is not in the form of Header.Payload.Signature")
        try:
            unverified = jwt.decode_complete(text, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return _invalid("Jwt header or payload is not base64url-encoded JSON")
        header: dict[str, Any] = unverified["header"]
        alg = header.get("alg")
        if not isinstance(alg, str) or alg == "none":
            return _invalid("Jwt alg is missing or not allowed")
        # PyJWT has checked that a kid is a string.
        token = _Token(text, alg, header.get("kid"), unverified["payload"])
        issuer = token.payload.get("iss")
        candidates = [p for p in location.providers if p.source.issuer == issuer]
        if not candidates:
            return _invalid("Jwt issuer is not configured")
        first: JwtOutcome | None = None
        for provider in candidates:
            outcome = self._verify(token, provider, location, patient)
            if outcome.status == "ok":
                return outcome
            if first is None or (outcome.status == "pending" and first.status != "pending"):
                first = outcome
        assert first is not None
        return first

    def _verify(
        self, token: _Token, provider: _Provider, location: _Location, patient: bool
    ) -> JwtOutcome:
        source = provider.source
        if source.jwks or not source.jwks_uri:
            keys = provider.keys
            if keys is None:
                return _invalid("Jwks of the issuer is not valid")
        else:
            found = self._cache.lookup(source.jwks_uri, source.timeout, token.kid, patient)
            if isinstance(found, asyncio.Future):
                return JwtOutcome("pending", wait=found)
            if found is None:
                return _invalid(FETCH_FAILED)
            keys = found
        error = _verify_signature(token, keys.candidates(token.kid, token.alg))
        if error:
            return _invalid(error)
        audiences = _audiences(token.payload.get("aud"))
        if not provider.accepts(audiences):
            return _invalid("Audiences in Jwt are not allowed")
        return self._accepted(token, audiences, provider, location)

    def _accepted(
        self,
        token: _Token,
        audiences: tuple[str, ...],
        provider: _Provider,
        location: _Location,
    ) -> JwtOutcome:
        keep = provider.source.forward_original_token
        remove = self._output_headers
        if location.kind == "header" and not keep:
            remove = (*remove, location.name)
        payload = token.payload
        presenter = payload.get("azp")
        subject = payload.get("sub")
        return JwtOutcome(
            "ok",
            principal=f"{provider.source.issuer}/{subject if isinstance(subject, str) else ''}",
            claims=payload,
            audiences=audiences,
            presenter=presenter if isinstance(presenter, str) else "",
            remove_headers=remove,
            add_headers=provider.outputs(payload, token.text.split(".", 2)[1]),
            strip_params=(location.name,) if location.kind == "param" and not keep else (),
        )


class _Token:
    """A token as found, with its header and payload decoded but not yet trusted."""

    __slots__ = ("alg", "kid", "payload", "text")

    def __init__(self, text: str, alg: str, kid: str | None, payload: dict[str, Any]) -> None:
        self.text = text
        self.alg = alg
        self.kid = kid
        self.payload = payload


def _verify_signature(token: _Token, keys: Sequence[VerificationKey]) -> str:
    """Check the signature, exp and nbf with each candidate key; the error, or "" when valid."""
    if not keys:
        return NO_MATCHING_KEY
    # Each key lists the algorithms it may verify, and candidates() kept keys that allow the
    # token's, so the token's alg never chooses how a key is interpreted.
    algorithms = [token.alg]
    for key in keys:
        try:
            jwt.decode(
                token.text,
                key.key,
                algorithms=algorithms,
                options=_DECODE_OPTIONS,
                leeway=CLOCK_SKEW_S,
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.ExpiredSignatureError:
            return "Jwt is expired"
        except jwt.ImmatureSignatureError:
            return "Jwt not yet valid"
        except jwt.PyJWTError:
            return VERIFICATION_FAILED
        return ""
    return VERIFICATION_FAILED


def _audiences(claim: object) -> tuple[str, ...]:
    if isinstance(claim, str):
        return (claim,)
    if isinstance(claim, list):
        return tuple(aud for aud in claim if isinstance(aud, str))
    return ()


def _invalid(error: str) -> JwtOutcome:
    return JwtOutcome("invalid", error=error)


def _after_prefix(value: bytes, prefix: bytes) -> str:
    """The token in a header value that starts with the lowercase `prefix`, else ""."""
    if prefix:
        if value[: len(prefix)].lower() != prefix:
            return ""
        value = value[len(prefix) :]
    return value.strip().decode("latin-1")


def _locations(providers: Sequence[_Provider]) -> list[_Location]:
    """Every token location, in search order: headers, then parameters, then cookies."""
    found: dict[tuple[LocationKind, str, bytes], list[_Provider]] = {}
    for kind in _SEARCH_ORDER:
        for provider in providers:
            for name, prefix in _provider_locations(provider.source, kind):
                key = (kind, name.lower(), prefix.lower().encode("latin-1"))
                found.setdefault(key, []).append(provider)
    return [
        _Location(kind, name, prefix, tuple(owners), rank)
        for rank, ((kind, name, prefix), owners) in enumerate(found.items())
    ]


def _provider_locations(source: JwtProvider, kind: LocationKind) -> list[tuple[str, str]]:
    """Where one provider looks, of one kind; Istio's defaults when it names no location."""
    defaults = not (source.from_headers or source.from_params or source.from_cookies)
    if kind == "header":
        return [_DEFAULT_HEADER] if defaults else list(source.from_headers)
    if kind == "param":
        return [(_DEFAULT_PARAM, "")] if defaults else [(name, "") for name in source.from_params]
    return [(name, "") for name in source.from_cookies]
