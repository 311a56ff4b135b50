"""Istio security resources to the security parts of one workload's snapshot: a pure translation.

Which policies apply to a workload follows Istio's scoping: a policy in the root namespace without
a selector applies to the whole mesh, one in the workload's namespace without a selector to that
namespace, and one with a selector to the workloads whose labels match it, in its own namespace
or, from the root namespace, in every namespace. Policies that attach by `targetRef(s)` are for
waypoints and gateways, never for sidecars, and are skipped here.

Not translated, and listed by `SecurityIndex.skipped`: CUSTOM AuthorizationPolicies (Gossamer has
no external authorizer) and dry-run ones (annotation `istio.io/dry-run: "true"`), which Istio
only logs and never enforces.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

import msgspec

from gossamer.resources import Resource
from gossamer.resources.base import WorkloadSelector
from gossamer.resources.kinds.istio_security import (
    AuthorizationPolicy,
    JWTRule,
    Operation,
    PeerAuthentication,
    RequestAuthentication,
    Rule,
    Source,
)
from gossamer.snapshot.durations import seconds
from gossamer.snapshot.model import (
    AuthzCondition,
    AuthzOperation,
    AuthzPolicy,
    AuthzRule,
    AuthzSource,
    InboundMtls,
    JwtProvider,
    MtlsMode,
    Security,
)
from gossamer.snapshot.translate_catalog import ROOT_NAMESPACE, labels_match

__all__ = [
    "DEFAULT_TRUST_DOMAIN",
    "DRY_RUN_ANNOTATION",
    "ROOT_NAMESPACE",
    "SecurityIndex",
    "SkippedPolicy",
    "endpoint_mtls_mode",
    "inbound_mtls",
    "workload_security",
]

DRY_RUN_ANNOTATION: Final = "istio.io/dry-run"
DEFAULT_TRUST_DOMAIN: Final = "cluster.local"
# With no PeerAuthentication anywhere Istio accepts both mTLS and plaintext.
_DEFAULT_MODE: Final[MtlsMode] = "PERMISSIVE"

_Scoped = TypeVar("_Scoped", AuthorizationPolicy, RequestAuthentication, PeerAuthentication)


@dataclass(frozen=True, slots=True)
class SkippedPolicy:
    """An AuthorizationPolicy that no sidecar enforces, and why (for `gossamer validate`)."""

    policy: str
    """`NAMESPACE/NAME`."""
    reason: str


def workload_security(
    resources: Sequence[Resource],
    namespace: str,
    labels: Mapping[str, str],
    *,
    roots: tuple[str, ...] = (),
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
) -> Security:
    """The AuthorizationPolicies and JWT issuers that apply to one workload (see the module)."""
    index = SecurityIndex(resources)
    return index.for_workload(namespace, labels, roots=roots, trust_domain=trust_domain)


def inbound_mtls(
    resources: Sequence[Resource], namespace: str, labels: Mapping[str, str]
) -> InboundMtls:
    """The PeerAuthentication mode a workload's sidecar accepts, with its per-port overrides."""
    return SecurityIndex(resources).mtls(namespace, labels)


def endpoint_mtls_mode(
    resources: Sequence[Resource],
    namespace: str,
    labels: Mapping[str, str],
    port: int | None = None,
) -> MtlsMode:
    """The mode of a workload's `port`, for a client that decides whether to originate mTLS.

    DISABLE means the workload takes plaintext only; STRICT and PERMISSIVE both take mTLS.
    """
    return SecurityIndex(resources).endpoint_mode(namespace, labels, port)


class SecurityIndex:
    """Security resources by namespace, for answering many workloads from one resource list.

    The control plane builds one per resource version and asks it for each of its workloads;
    converted policies are cached, so a policy that applies to a thousand workloads is
    translated once.
    """

    __slots__ = ("_authz", "_converted", "_jwt", "_peer", "root_namespace", "skipped")

    def __init__(
        self, resources: Iterable[Resource], *, root_namespace: str = ROOT_NAMESPACE
    ) -> None:
        self.root_namespace = root_namespace
        self._authz: dict[str, list[AuthorizationPolicy]] = {}
        self._jwt: dict[str, list[RequestAuthentication]] = {}
        self._peer: dict[str, list[PeerAuthentication]] = {}
        self._converted: dict[tuple[str, str, str], AuthzPolicy] = {}
        skipped: list[SkippedPolicy] = []
        for resource in resources:
            if isinstance(resource, AuthorizationPolicy):
                reason = _unenforced(resource)
                if reason:
                    skipped.append(SkippedPolicy(_qualified(resource), reason))
                elif not _targets(resource):
                    self._authz.setdefault(resource.namespace, []).append(resource)
            elif isinstance(resource, RequestAuthentication):
                if not _targets(resource):
                    self._jwt.setdefault(resource.namespace, []).append(resource)
            elif isinstance(resource, PeerAuthentication):
                self._peer.setdefault(resource.namespace, []).append(resource)
        self.skipped = tuple(sorted(skipped, key=lambda s: s.policy))
        """AuthorizationPolicies left out of every snapshot, by name."""

    def __repr__(self) -> str:
        counts = (sum(map(len, kind.values())) for kind in (self._authz, self._jwt, self._peer))
        authz, jwt, peer = counts
        return f"<SecurityIndex {authz} authorization, {jwt} request auth, {peer} peer auth>"

    def for_workload(
        self,
        namespace: str,
        labels: Mapping[str, str],
        *,
        roots: tuple[str, ...] = (),
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
    ) -> Security:
        """The Security part of the snapshot of a workload in `namespace` with these labels."""
        policies = self._applying(self._authz, namespace, labels)
        authorization = sorted(
            (self._authz_policy(p, trust_domain) for p in policies), key=lambda p: p.name
        )
        requests = sorted(self._applying(self._jwt, namespace, labels), key=_qualified)
        providers = tuple(
            _jwt_provider(rule, _qualified(r)) for r in requests for rule in r.spec.jwt_rules
        )
        return Security(
            trust_domain=trust_domain,
            roots=roots,
            authorization=tuple(authorization),
            jwt=providers,
        )

    def mtls(self, namespace: str, labels: Mapping[str, str]) -> InboundMtls:
        """The effective PeerAuthentication of a workload: most specific level wins.

        Levels: the workload's (a selector that matches, in its namespace), the namespace's (no
        selector), the mesh's (root namespace, no selector). UNSET, or no policy, inherits from
        the level above; the mesh default is PERMISSIVE. Port-level modes come from the workload
        policy only, an UNSET port inheriting the workload's mode. When several policies share a
        level Istio takes the oldest; here that is the earliest `creationTimestamp`, then the
        name (manifests from files seldom carry a timestamp). As in Istio, a PeerAuthentication
        with a selector in the root namespace applies to no workload.
        """
        mode = _DEFAULT_MODE
        for level in (self.root_namespace, namespace):
            mode = _mode(self._namespace_peer(level), mode)
        workload = self._workload_peer(namespace, labels)
        if workload is None:
            return InboundMtls(mode=mode)
        mode = _mode(workload, mode)
        ports: dict[int, MtlsMode] = {}
        for key, setting in workload.spec.port_level_mtls.items():
            text = str(key)
            if text.isdigit():
                ports[int(text)] = mode if setting.mode == "UNSET" else setting.mode
        return InboundMtls(mode=mode, ports=tuple(sorted(ports.items())))

    def endpoint_mode(
        self, namespace: str, labels: Mapping[str, str], port: int | None = None
    ) -> MtlsMode:
        """The mode for `port` of the workload (its default mode when `port` is None)."""
        effective = self.mtls(namespace, labels)
        if port is not None:
            for number, mode in effective.ports:
                if number == port:
                    return mode
        return effective.mode

    def _applying(
        self, by_namespace: Mapping[str, list[_Scoped]], namespace: str, labels: Mapping[str, str]
    ) -> list[_Scoped]:
        """The resources in scope of a workload: its namespace's and the root namespace's."""
        found: list[_Scoped] = []
        for owner in dict.fromkeys((namespace, self.root_namespace)):
            for resource in by_namespace.get(owner, ()):
                if labels_match(_selector(resource.spec.selector), labels):
                    found.append(resource)
        return found

    def _namespace_peer(self, namespace: str) -> PeerAuthentication | None:
        """The oldest PeerAuthentication of `namespace` without a selector."""
        candidates = [p for p in self._peer.get(namespace, ()) if not _selector(p.spec.selector)]
        return min(candidates, key=_age, default=None)

    def _workload_peer(
        self, namespace: str, labels: Mapping[str, str]
    ) -> PeerAuthentication | None:
        """The oldest PeerAuthentication whose selector picks the workload (not from the root)."""
        if namespace == self.root_namespace:
            return None
        candidates = [
            p
            for p in self._peer.get(namespace, ())
            if (chosen := _selector(p.spec.selector)) and labels_match(chosen, labels)
        ]
        return min(candidates, key=_age, default=None)

    def _authz_policy(self, policy: AuthorizationPolicy, trust_domain: str) -> AuthzPolicy:
        key = (policy.namespace, policy.name, trust_domain)
        converted = self._converted.get(key)
        if converted is None:
            converted = _authz_policy(policy, trust_domain)
            self._converted[key] = converted
        return converted


def _mode(policy: PeerAuthentication | None, inherited: MtlsMode) -> MtlsMode:
    if policy is None or policy.spec.mtls is None or policy.spec.mtls.mode == "UNSET":
        return inherited
    return policy.spec.mtls.mode


def _age(resource: Resource) -> tuple[bool, str, str]:
    """Oldest first: by creationTimestamp (RFC 3339 sorts as text), those without one last."""
    stamp = resource.metadata.creation_timestamp
    return (stamp is None, stamp or "", resource.name)


def _selector(selector: WorkloadSelector | None) -> Mapping[str, str]:
    """The labels a selector asks for; none (or empty `matchLabels`) selects every workload."""
    return selector.match_labels if selector is not None else {}


def _targets(resource: AuthorizationPolicy | RequestAuthentication) -> bool:
    """Whether the policy attaches to a waypoint or gateway by targetRef(s)."""
    return resource.spec.target_ref is not None or bool(resource.spec.target_refs)


def _unenforced(policy: AuthorizationPolicy) -> str:
    """Why no sidecar enforces this policy, or "" when one does."""
    if policy.spec.action == "CUSTOM":
        return "CUSTOM action: no external authorizer in Gossamer"
    if policy.metadata.annotations.get(DRY_RUN_ANNOTATION, "").lower() == "true":
        return f"{DRY_RUN_ANNOTATION}: logged by Istio, never enforced"
    return ""


def _qualified(resource: Resource) -> str:
    return f"{resource.namespace}/{resource.name}"


def _authz_policy(policy: AuthorizationPolicy, trust_domain: str) -> AuthzPolicy:
    spec = policy.spec
    assert spec.action != "CUSTOM", "CUSTOM policies are skipped before conversion"
    return AuthzPolicy(
        name=_qualified(policy),
        action=spec.action,
        rules=tuple(_authz_rule(rule, trust_domain) for rule in spec.rules),
    )


def _authz_rule(rule: Rule, trust_domain: str) -> AuthzRule:
    return AuthzRule(
        sources=tuple(_authz_source(clause.source, trust_domain) for clause in rule.from_),
        operations=tuple(_authz_operation(clause.operation) for clause in rule.to),
        conditions=tuple(
            AuthzCondition(key=c.key, values=tuple(c.values), not_values=tuple(c.not_values))
            for c in rule.when
        ),
    )


def _authz_source(source: Source, trust_domain: str) -> AuthzSource:
    """A source; `serviceAccounts` (`NAMESPACE/SA`) become principals of the trust domain.

    Istio refuses serviceAccounts together with principals or namespaces, so adding them to the
    principals keeps the meaning.
    """
    return AuthzSource(
        principals=(
            *source.principals,
            *_principals(source.service_accounts, trust_domain),
        ),
        not_principals=(
            *source.not_principals,
            *_principals(source.not_service_accounts, trust_domain),
        ),
        request_principals=tuple(source.request_principals),
        not_request_principals=tuple(source.not_request_principals),
        namespaces=tuple(source.namespaces),
        not_namespaces=tuple(source.not_namespaces),
        ip_blocks=tuple(source.ip_blocks),
        not_ip_blocks=tuple(source.not_ip_blocks),
        remote_ip_blocks=tuple(source.remote_ip_blocks),
        not_remote_ip_blocks=tuple(source.not_remote_ip_blocks),
    )


def _principals(service_accounts: Sequence[str], trust_domain: str) -> tuple[str, ...]:
    """`NAMESPACE/SA` as `TRUST_DOMAIN/ns/NAMESPACE/sa/SA`.

    A value not of that form is kept as it is: no peer has such a principal, so it matches
    nothing, where dropping it could leave the field empty and match everyone.
    """
    principals: list[str] = []
    for account in service_accounts:
        namespace, slash, name = account.partition("/")
        if slash and namespace and name and "/" not in name:
            principals.append(f"{trust_domain}/ns/{namespace}/sa/{name}")
        else:
            principals.append(account)
    return tuple(principals)


def _authz_operation(operation: Operation) -> AuthzOperation:
    return AuthzOperation(
        hosts=tuple(operation.hosts),
        not_hosts=tuple(operation.not_hosts),
        ports=tuple(operation.ports),
        not_ports=tuple(operation.not_ports),
        methods=tuple(operation.methods),
        not_methods=tuple(operation.not_methods),
        paths=tuple(operation.paths),
        not_paths=tuple(operation.not_paths),
    )


def _jwt_provider(rule: JWTRule, policy: str) -> JwtProvider:
    """A jwtRule; header names lowercase, each with its prefix ("" when none)."""
    provider = JwtProvider(
        issuer=rule.issuer,
        audiences=tuple(rule.audiences),
        jwks=rule.jwks or "",
        jwks_uri=rule.jwks_uri or "",
        from_headers=tuple((h.name.lower(), h.prefix or "") for h in rule.from_headers),
        from_params=tuple(rule.from_params),
        from_cookies=tuple(rule.from_cookies),
        forward_original_token=bool(rule.forward_original_token),
        output_payload_to_header=(rule.output_payload_to_header or "").lower(),
        output_claim_to_headers=tuple(
            (c.header.lower(), c.claim) for c in rule.output_claim_to_headers
        ),
        policy=policy,
    )
    if rule.timeout is None:
        return provider
    return msgspec.structs.replace(provider, timeout=seconds(rule.timeout))
