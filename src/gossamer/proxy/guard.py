"""What an inbound or gateway listener checks before a request is routed on.

In Istio's order: the port's mTLS mode (a plaintext request to a STRICT port is refused), then
RequestAuthentication (a token that is present must be valid: 401 otherwise), then
AuthorizationPolicy (DENY, then ALLOW: 403 `rbac denied`). Everything is compiled once per
snapshot; a listener with no policies has no guard at all and pays nothing per request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gossamer.proxy.mtls import port_mode
from gossamer.security.authz import Authorizer, AuthzDecision, AuthzRequest
from gossamer.snapshot.model import InboundMtls, Security

if TYPE_CHECKING:
    # Loaded only by a snapshot with RequestAuthentication: PyJWT and httpx cost a proxy
    # process about 15 MB.
    from gossamer.security.jwt import JwksCache, JwtAuthenticator, JwtOutcome

RBAC_DENIED = "RBAC"
"""Access-log flag of a request an AuthorizationPolicy denied."""
JWT_DENIED = "JWT"
"""Access-log flag of a request whose token was refused."""
MTLS_REQUIRED = "MTLS"
"""Access-log flag of a plaintext request to a port that takes only mTLS."""
NO_ALLOW_MATCHED = "(no ALLOW policy matched)"
"""What the access log names as the deciding policy of a request denied by default."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is not let through: status, reason for people, access-log flag, policy."""

    status: int
    reason: str
    flag: str
    policy: str = ""


class RequestGuard:
    """mTLS per port, JWT and authorization for one listener under one snapshot."""

    __slots__ = ("authorizer", "jwt", "mtls")

    def __init__(
        self, security: Security, mtls: InboundMtls | None, jwks: Callable[[], JwksCache]
    ) -> None:
        self.authorizer = Authorizer(security.authorization)
        self.jwt: JwtAuthenticator | None = None
        if security.jwt:
            from gossamer.security.jwt import JwtAuthenticator  # noqa: PLC0415

            self.jwt = JwtAuthenticator(security.jwt, jwks())
        # Only a port override can refuse what the listener accepted.
        self.mtls = mtls if mtls is not None and mtls.ports else None

    def __repr__(self) -> str:
        return (
            f"<RequestGuard authz={self.authorizer.active} jwt={self.jwt is not None} "
            f"mtls-ports={self.mtls is not None}>"
        )

    @staticmethod
    def build(
        security: Security, mtls: InboundMtls | None, jwks: Callable[[], JwksCache]
    ) -> RequestGuard | None:
        """The guard of a listener, or None when it has nothing to check; `jwks` gives the
        proxy's key-set cache, made on first use."""
        guard = RequestGuard(security, mtls, jwks)
        if guard.authorizer.active or guard.jwt is not None or guard.mtls is not None:
            return guard
        return None

    def check_transport(self, secure: bool, port: int) -> Refusal | None:
        """A plaintext request to a port whose PeerAuthentication is STRICT is refused."""
        if self.mtls is None or secure:
            return None
        if port_mode(self.mtls, port) == "STRICT":
            return Refusal(403, f"mTLS required on port {port}", MTLS_REQUIRED)
        return None

    def authenticate(
        self, headers: list[tuple[bytes, bytes]], query: str, *, patient: bool = True
    ) -> JwtOutcome | None:
        """The JWT outcome, or None when no RequestAuthentication applies (`patient`: see
        JwtAuthenticator.authenticate)."""
        if self.jwt is None:
            return None
        return self.jwt.authenticate(headers, query, patient=patient)

    def authorize(self, request: AuthzRequest) -> Refusal | AuthzDecision:
        """The AuthorizationPolicy decision; a Refusal when denied."""
        decision = self.authorizer.check(request)
        if decision.allowed:
            return decision
        # Denied by default (ALLOW policies apply, none matched): the log says so by name.
        return Refusal(403, "rbac denied", RBAC_DENIED, decision.policy or NO_ALLOW_MATCHED)
