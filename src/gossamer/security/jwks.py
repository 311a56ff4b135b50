"""JWT verification keys: a JWKS parsed into keys, and a cache of those fetched from `jwks_uri`s.

The key sets fetched from `jwks_uri`s live in a `JwksCache` that outlives snapshots, so a new
snapshot does not refetch keys and a request never parses a JWKS.

- A key may verify only the algorithms of its declared `alg`, else those of its key type and
  curve; keys below PyJWT's minimum length are dropped when the set is parsed.
- A fetched JWKS that cannot be parsed counts as a failed fetch: the last good set stays.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from gossamer.security.plain_get import get_via_proxy

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 1 << 20
"""A JWKS larger than this is refused: a handful of keys is a few kilobytes."""

Fetch = Callable[[str, float], Awaitable[bytes]]

_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGORITHMS = {
    "secp256r1": frozenset({"ES256"}),
    "secp384r1": frozenset({"ES384"}),
    "secp521r1": frozenset({"ES512"}),
    "secp256k1": frozenset({"ES256K"}),
}
_HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_EDDSA = frozenset({"EdDSA"})
# Verification needs only the public half; a JWKS that leaks private members still works.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth"})


class VerificationKey:
    """One verification key and the algorithms it may verify."""

    __slots__ = ("algorithms", "key", "kid")

    def __init__(self, key: Any, algorithms: frozenset[str], kid: str | None) -> None:
        self.key = key
        self.algorithms = algorithms
        self.kid = kid

    @classmethod
    def from_jwk(cls, member: object) -> VerificationKey | None:
        """The key of one JWKS member, or None when it cannot verify JWS signatures."""
        if not isinstance(member, dict) or member.get("use", "sig") != "sig":
            return None
        if member.get("kty") != "oct":
            member = {name: value for name, value in member.items() if name not in _PRIVATE_MEMBERS}
        try:
            key = jwt.PyJWK(member).key
        except Exception:  # a remote key set is untrusted input: one bad member is skipped
            return None
        algorithms = _algorithms_for(key)
        declared = member.get("alg")
        if declared is not None:
            algorithms &= {declared}
        algorithms = frozenset(
            name
            for name in algorithms
            if jwt.get_algorithm_by_name(name).check_key_length(key) is None
        )
        if not algorithms:
            return None
        kid = member.get("kid")
        return cls(key, algorithms, kid if isinstance(kid, str) else None)


def _algorithms_for(key: object) -> frozenset[str]:
    """The JWS algorithms a key of this type can verify."""
    if isinstance(key, rsa.RSAPublicKey):
        return _RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _EC_ALGORITHMS.get(key.curve.name, frozenset())
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return _EDDSA
    if isinstance(key, bytes):
        return _HMAC_ALGORITHMS
    return frozenset()


class KeySet:
    """A parsed JWKS, indexed by `kid`; built once per fetch, read by every request."""

    __slots__ = ("all", "by_kid", "unnamed")

    def __init__(self, keys: Sequence[VerificationKey]) -> None:
        self.all = tuple(keys)
        self.unnamed = tuple(key for key in keys if key.kid is None)
        self.by_kid: dict[str, tuple[VerificationKey, ...]] = {}
        for key in keys:
            if key.kid is not None:
                self.by_kid[key.kid] = (*self.by_kid.get(key.kid, ()), key)

    @classmethod
    def parse(cls, document: str | bytes) -> KeySet:
        """Parse a JWKS document; ValueError when it holds no usable signing key."""
        try:
            data = json.loads(document)
        except (ValueError, RecursionError) as exc:
            raise ValueError("the JWKS is not JSON") from exc
        members = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(members, list):
            raise ValueError('the JWKS has no "keys" list')
        keys = [key for member in members if (key := VerificationKey.from_jwk(member)) is not None]
        if not keys:
            raise ValueError("the JWKS has no usable signing key")
        return cls(keys)

    def candidates(self, kid: str | None, alg: str) -> list[VerificationKey]:
        """Keys to try for a token: those with its kid (or all without one), and kid-less keys."""
        named = self.all if kid is None else (*self.by_kid.get(kid, ()), *self.unnamed)
        return [key for key in named if alg in key.algorithms]


class _RemoteJwks:
    """The state of one `jwks_uri`: the last good set, and the fetch in flight if any."""

    __slots__ = ("error", "fetched_at", "keys", "settled_at", "task", "uri", "waiters")

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.keys: KeySet | None = None
        self.fetched_at = 0.0
        """When `keys` arrived."""
        self.settled_at: float | None = None
        """When the last fetch ended, well or not; None before the first one ends."""
        self.error = ""
        self.task: asyncio.Task[None] | None = None
        self.waiters: list[asyncio.Future[None]] = []


class JwksCache:
    """Process-wide cache of fetched key sets, shared by every authenticator a proxy builds.

    Snapshots come and go; keys stay. A set older than `refresh_interval_s` is refetched in the
    background on its next use while the old one keeps serving; a token with an unknown `kid`
    makes requests wait for a refetch, at most one per `min_refetch_interval_s` (counted from
    the end of the previous fetch) per URI, which is also the retry pace after a failure (with no
    set at all, a request waits for that paced retry instead of being refused). A
    failed fetch keeps the last good set. `fetches` and `fetch_failures` count for /stats.

    `proxy` is an HTTP proxy to fetch through: a sidecar gives its own outbound listener, so
    that a `jwksUri` naming a service of the mesh is fetched as the app would call it (routed,
    over mTLS), as Envoy fetches remote key sets through one of its clusters.
    """

    def __init__(
        self,
        *,
        proxy: str | None = None,
        refresh_interval_s: float = 1200.0,
        min_refetch_interval_s: float = 1.0,
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.refresh_interval_s = refresh_interval_s
        self.min_refetch_interval_s = min_refetch_interval_s
        self._fetch = fetch if fetch is not None else self._http_get
        self.proxy = proxy
        self._clock = clock
        self._client: httpx.AsyncClient | None = None
        self._entries: dict[str, _RemoteJwks] = {}
        self.fetches = 0
        self.fetch_failures = 0
        self._closed = False

    def __repr__(self) -> str:
        entries = self._entries.values()
        fetching = sum(entry.task is not None for entry in entries)
        missing = sum(entry.keys is None for entry in entries)
        return f"<JwksCache {len(entries)} URIs, {fetching} fetching, {missing} without keys>"

    async def close(self) -> None:
        """Cancel fetches in flight (their waiters resolve) and close the HTTP client; no fetch
        starts after this."""
        self._closed = True
        tasks = [entry.task for entry in self._entries.values() if entry.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def prefetch(self, uri: str, timeout: float) -> None:
        """Start fetching `uri` if it has no keys and no fetch yet; needs a running loop.

        An authenticator calls this when it is compiled, so that the first token for a new
        `jwks_uri` is more likely to find its keys already there.
        """
        entry = self._entry(uri)
        if entry.keys is None and entry.task is None and entry.settled_at is None:
            self._start(entry, timeout)

    def lookup(
        self, uri: str, timeout: float, kid: str | None, patient: bool = True
    ) -> KeySet | asyncio.Future[None] | None:
        """The keys to check a token with, a future to wait on first, or None (fetch failed).

        A set older than `refresh_interval_s` is returned while a refetch starts behind it.
        Without a set, or without `kid` in it, a fetch is started if the pace allows, and the
        future it returns resolves (never raising) when that fetch ends; the caller then looks
        up again. Without any set, a `patient` request after a failed fetch waits for the next
        fetch the pace allows. None means there are no keys, the last fetch failed too recently
        to retry, and the request is not patient (it already waited once). Call it on the
        event loop.
        """
        entry = self._entry(uri)
        now = self._clock()
        may_refetch = entry.settled_at is None or (
            now - entry.settled_at >= self.min_refetch_interval_s
        )
        keys = entry.keys
        if keys is None or (kid is not None and kid not in keys.by_kid):
            if entry.task is None and may_refetch:
                self._start(entry, timeout)
            elif entry.task is None and keys is None and patient and entry.settled_at is not None:
                # No keys at all and the last fetch failed a moment ago (an issuer that was
                # not up yet when the proxy started): wait for the next fetch the pace allows
                # rather than refuse a valid token. A set without the token's kid answers at
                # once, so that made-up kids cannot hold requests.
                delay = entry.settled_at + self.min_refetch_interval_s - now
                self._start(entry, timeout, delay)
            if entry.task is not None:
                return self._waiter(entry)
            return keys
        if entry.task is None and may_refetch and now - entry.fetched_at >= self.refresh_interval_s:
            self._start(entry, timeout)
        return keys

    def _entry(self, uri: str) -> _RemoteJwks:
        entry = self._entries.get(uri)
        if entry is None:
            entry = self._entries[uri] = _RemoteJwks(uri)
        return entry

    def _start(self, entry: _RemoteJwks, timeout: float, delay: float = 0.0) -> None:
        if self._closed:
            return
        refresh = self._refresh(entry, timeout, delay)
        entry.task = asyncio.get_running_loop().create_task(refresh)
        # A callback, not a `finally`: it also runs for a task cancelled before it started.
        entry.task.add_done_callback(lambda _: self._settle(entry))

    def _settle(self, entry: _RemoteJwks) -> None:
        entry.settled_at = self._clock()
        entry.task = None
        waiters, entry.waiters = entry.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    @staticmethod
    def _waiter(entry: _RemoteJwks) -> asyncio.Future[None]:
        # One future per waiting request: a request cancelled while waiting cancels its own.
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry.waiters.append(waiter)
        return waiter

    async def _refresh(self, entry: _RemoteJwks, timeout: float, delay: float = 0.0) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        self.fetches += 1
        try:
            async with asyncio.timeout(timeout):
                document = await self._fetch(entry.uri, timeout)
            keys = KeySet.parse(document)
        except Exception as exc:  # a peer's failure of any kind keeps the last good set
            self.fetch_failures += 1
            entry.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.warning("JWKS fetch from %s failed: %s", entry.uri, entry.error)
        else:
            entry.keys = keys
            entry.fetched_at = self._clock()
            entry.error = ""

    async def _http_get(self, uri: str, timeout: float) -> bytes:
        if self.proxy is not None and uri.startswith("http://"):
            return await get_via_proxy(uri, self.proxy, timeout, MAX_JWKS_BYTES)
        import httpx  # noqa: PLC0415 - only for https issuers (and without a proxy): it is slow to import

        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=True, proxy=self.proxy)
        async with self._client.stream("GET", uri, timeout=timeout) as response:
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
        return bytes(body)
