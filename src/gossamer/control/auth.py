"""Who may call the API: bearer tokens, the principals they stand for, and what each may do.

Tokens are kept by their SHA-256, so a lookup compares digests rather than secrets. A principal
carries RBAC-like rules (verbs x groups x resources x namespaces x names, `*` for any); the admin
token's principal may do everything. Workload tokens will be principals whose rules name their
own workload's objects.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

ANY = "*"
ADMIN_TOKEN_FILE = "admin-token"
PROMETHEUS_TOKEN_FILE = "prometheus-token"
"""A token that may only list the mesh's scrape targets: what a Prometheus server holds."""


class Verb(StrEnum):
    """What a request does, as Kubernetes RBAC names it."""

    GET = "get"
    LIST = "list"
    WATCH = "watch"
    CREATE = "create"
    UPDATE = "update"
    PATCH = "patch"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Access:
    """One request to authorize; namespace None is a list or watch across namespaces."""

    verb: Verb
    group: str
    plural: str
    namespace: str | None = None
    name: str | None = None


def _any() -> frozenset[str]:
    return frozenset({ANY})


@dataclass(frozen=True, slots=True)
class Rule:
    """Allows every combination of the listed values; `*` stands for any value."""

    verbs: frozenset[str] = field(default_factory=_any)
    groups: frozenset[str] = field(default_factory=_any)
    plurals: frozenset[str] = field(default_factory=_any)
    namespaces: frozenset[str] = field(default_factory=_any)
    names: frozenset[str] = field(default_factory=_any)

    def allows(self, access: Access) -> bool:
        """Whether this rule covers the access (an unnamed or all-namespace one needs `*`)."""
        return (
            _covers(self.verbs, access.verb.value)
            and _covers(self.groups, access.group)
            and _covers(self.plurals, access.plural)
            and _covers(self.namespaces, access.namespace)
            and _covers(self.names, access.name)
        )


def _covers(allowed: frozenset[str], value: str | None) -> bool:
    return ANY in allowed or (value is not None and value in allowed)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a token stands for, and what they may do."""

    name: str
    rules: tuple[Rule, ...]

    def allows(self, access: Access) -> bool:
        """Whether any rule covers the access."""
        return any(rule.allows(access) for rule in self.rules)


ADMIN = Principal("admin", (Rule(),))

MESH_GROUP = "gossamer.dev"
STREAMS = "meshstreams"
"""What a proxy's config stream is, to authorization: `watch` one workload's `meshstreams`."""


SCRAPE_TARGETS = "scrapetargets"
"""What Prometheus' discovery of the proxies' admin endpoints is, to authorization: `list`
`scrapetargets`."""

PROMETHEUS = Principal(
    "prometheus",
    (
        Rule(
            verbs=frozenset({Verb.LIST.value}),
            groups=frozenset({MESH_GROUP}),
            plurals=frozenset({SCRAPE_TARGETS}),
        ),
    ),
)
"""The discovery token's principal: it reads the scrape targets and nothing else, so a
Prometheus server's configuration holds no key to the mesh."""


SPANS = "spans"
"""What a proxy's spans are, to authorization: `create` `spans` in its own namespace."""


def workload_principal(namespace: str, workload: str) -> Principal:
    """A workload's token: it may open its own workload's config stream and report spans of
    its namespace to the built-in receiver, nothing else."""
    rule = Rule(
        verbs=frozenset({Verb.WATCH.value}),
        groups=frozenset({MESH_GROUP}),
        plurals=frozenset({STREAMS}),
        namespaces=frozenset({namespace}),
        names=frozenset({workload}),
    )
    spans = Rule(
        verbs=frozenset({Verb.CREATE.value}),
        groups=frozenset({MESH_GROUP}),
        plurals=frozenset({SPANS}),
        namespaces=frozenset({namespace}),
    )
    return Principal(f"workload {namespace}/{workload}", (rule, spans))


DASHBOARD_LOGINS = "dashboardlogins"
"""What minting a one-time dashboard login is, to authorization: `create` `dashboardlogins`."""

DASHBOARD_SESSION = Principal(
    "dashboard session",
    (Rule(verbs=frozenset({Verb.GET.value, Verb.LIST.value})),),
)
"""What a dashboard signed in by a one-time link may do: read, and nothing else (no writes, no
taps, no config streams), so a browser tab holds no key that changes the mesh."""


class TokenRegistry:
    """Bearer tokens -> principals."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._by_digest: dict[bytes, Principal] = {}
        self._workloads: dict[bytes, Principal] = {}
        self._expiring: dict[bytes, tuple[Principal, float]] = {}
        self._clock = clock

    def __repr__(self) -> str:
        return f"<TokenRegistry {len(self._by_digest)} tokens, {len(self._workloads)} workload>"

    def add(self, token: str, principal: Principal) -> None:
        """Accept `token` as `principal` from now on."""
        self._by_digest[token_digest(token)] = principal

    def add_workload(self, digest: bytes, principal: Principal) -> None:
        """Accept a workload token known by its digest (minted here or by another replica)."""
        self._workloads[digest] = principal

    def replace_workloads(self, tokens: dict[bytes, Principal]) -> None:
        """The workload tokens, all at once, as the store holds them now (revoked ones go)."""
        self._workloads = tokens

    def add_expiring(self, token: str, principal: Principal, lifetime_s: float) -> None:
        """Accept `token` as `principal` for `lifetime_s` seconds."""
        self._expiring[token_digest(token)] = (principal, self._clock() + lifetime_s)

    def expiring(self) -> int:
        """How many expiring tokens are still valid (the expired ones are dropped here)."""
        now = self._clock()
        for digest in [d for d, (_, end) in self._expiring.items() if end <= now]:
            del self._expiring[digest]
        return len(self._expiring)

    def authenticate(self, token: str) -> Principal | None:
        """The token's principal, or None for a token nobody issued (or one that expired)."""
        digest = token_digest(token)
        found = self._by_digest.get(digest) or self._workloads.get(digest)
        if found is None and digest in self._expiring:
            principal, end = self._expiring[digest]
            if self._clock() < end:
                return principal
        return found


def token_digest(token: str) -> bytes:
    """What a token is kept as: its SHA-256."""
    return hashlib.sha256(token.encode()).digest()


class TokenFileError(Exception):
    """The admin token file cannot be used (unreadable, empty, or readable by others)."""


def load_admin_token(state_dir: Path) -> str:
    """The admin token in `state_dir`, created (mode 0600, folder 0700) on first start."""
    return _load_or_create_token(state_dir / ADMIN_TOKEN_FILE)


def load_prometheus_token(state_dir: Path) -> str:
    """The scrape-target discovery token in `state_dir`, created as the admin token is."""
    return _load_or_create_token(state_dir / PROMETHEUS_TOKEN_FILE)


def _load_or_create_token(path: Path) -> str:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_token(path)
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")
    return token


def _read_token(path: Path) -> str:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenFileError(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}): "
            f"run `chmod 600 {path}` or delete it to have a new token made"
        )
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise TokenFileError(f"{path} is empty: delete it to have a new token made")
    return token
