"""Istio AuthorizationPolicy evaluation: compiled once per snapshot, checked on every request.

`Authorizer` turns the snapshot's `AuthzPolicy` list into predicates over a request (built by
security/authz_match.py), so that `check` only compares strings and walks short tuples. The
decision follows Istio's order: a matching DENY policy denies; with no ALLOW policy the request
is allowed; otherwise some ALLOW policy must match. AUDIT policies are only reported. CUSTOM
policies never reach the proxy (snapshot/translate_security.py leaves them out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from gossamer.security.authz_match import Needs, Predicate, RequestView, any_clause, compile_rule
from gossamer.snapshot.model import AuthzAction, AuthzPolicy

__all__ = ["NO_ALLOW_MATCHED", "Authorizer", "AuthzDecision", "AuthzRequest"]

NO_ALLOW_MATCHED: Final = ""
"""The `policy` of a denial that no DENY policy made: ALLOW policies exist and none matched."""


@dataclass(slots=True)
class AuthzRequest:
    """What a policy can look at in one request; built by the proxy only when policies exist."""

    method: str
    path: str
    """Without the query string."""
    host: str
    """The authority as sent, perhaps with `:port`."""
    port: int
    """The destination (workload) port."""
    source_principal: str = ""
    """The peer's identity in Istio's form `cluster.local/ns/NS/sa/SA`; empty for plaintext."""
    source_ip: str = ""
    remote_ip: str = ""
    """The original client (from X-Forwarded-For where trusted); empty means `source_ip`."""
    destination_ip: str = ""
    sni: str = ""
    request_principal: str = ""
    """`ISSUER/SUBJECT` of a validated JWT; empty when there is none."""
    claims: Mapping[str, object] | None = None
    """The validated JWT's claims; only needed when `Authorizer.needs_claims`."""
    headers: Mapping[str, str] | None = None
    """Lowercase names; only needed when `Authorizer.needs_headers`."""


@dataclass(frozen=True, slots=True)
class AuthzDecision:
    """The outcome of one check, and which policy decided it (for the access log)."""

    allowed: bool
    policy: str
    """`NAMESPACE/NAME` of the deciding policy; `NO_ALLOW_MATCHED` ("") when none decided."""
    audited: tuple[str, ...] = ()
    """The AUDIT policies that matched."""


_ALLOWED_BY_DEFAULT = AuthzDecision(allowed=True, policy="")
_DENIED_BY_DEFAULT = AuthzDecision(allowed=False, policy=NO_ALLOW_MATCHED)


class _Policy:
    """A compiled policy: it matches when any of its rules does (none: it never matches)."""

    __slots__ = ("allow", "deny", "matches", "name")

    def __init__(self, name: str, rules: Sequence[tuple[Predicate, ...]]) -> None:
        self.name = name
        self.matches = any_clause(rules)
        # Decisions are made once here so that a check that audits nothing allocates none.
        self.allow = AuthzDecision(allowed=True, policy=name)
        self.deny = AuthzDecision(allowed=False, policy=name)


class Authorizer:
    """The AuthorizationPolicies of one snapshot, compiled; `check` decides one request."""

    __slots__ = ("_allow", "_audit", "_deny", "_needs", "active", "needs_claims", "needs_headers")

    def __init__(self, policies: Sequence[AuthzPolicy]) -> None:
        self._needs = Needs()
        compiled: dict[AuthzAction, list[_Policy]] = {"ALLOW": [], "DENY": [], "AUDIT": []}
        for policy in policies:
            rules = tuple(compile_rule(rule, policy.action, self._needs) for rule in policy.rules)
            compiled[policy.action].append(_Policy(policy.name, rules))
        self._allow = tuple(compiled["ALLOW"])
        self._deny = tuple(compiled["DENY"])
        self._audit = tuple(compiled["AUDIT"])
        self.active = bool(policies)
        """False when there is nothing to enforce: the proxy then builds no AuthzRequest."""
        self.needs_headers = self._needs.headers
        """Whether `AuthzRequest.headers` must be filled in."""
        self.needs_claims = self._needs.claims
        """Whether `AuthzRequest.claims` must be filled in."""

    def __repr__(self) -> str:
        return (
            f"<Authorizer {len(self._allow)} allow, {len(self._deny)} deny, "
            f"{len(self._audit)} audit>"
        )

    def check(self, request: AuthzRequest) -> AuthzDecision:
        """Allow or deny `request`, in Istio's order: DENY, then no ALLOW at all, then ALLOW."""
        view = RequestView(request, self._needs)
        audited = tuple(p.name for p in self._audit if p.matches(view)) if self._audit else ()
        for policy in self._deny:
            if policy.matches(view):
                return _with_audit(policy.deny, audited)
        if not self._allow:
            return _with_audit(_ALLOWED_BY_DEFAULT, audited)
        for policy in self._allow:
            if policy.matches(view):
                return _with_audit(policy.allow, audited)
        return _with_audit(_DENIED_BY_DEFAULT, audited)


def _with_audit(decision: AuthzDecision, audited: tuple[str, ...]) -> AuthzDecision:
    if not audited:
        return decision
    return AuthzDecision(decision.allowed, decision.policy, audited)
