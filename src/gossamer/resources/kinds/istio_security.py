"""Istio `security.istio.io`: PeerAuthentication, AuthorizationPolicy, RequestAuthentication."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import ClassVar, Literal

from pydantic import AliasChoices, Field

from gossamer.resources.base import (
    Duration,
    Finding,
    Model,
    PolicyTargetReference,
    Resource,
    WorkloadSelector,
)

SECURITY_VERSIONS = ("v1", "v1beta1")
_PORT_KEY = re.compile(r"[0-9]{1,5}")


class MutualTLS(Model):
    """Whether a workload accepts plaintext, mTLS, or both."""

    mode: Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"] = "UNSET"


class PeerAuthenticationSpec(Model):
    """Istio PeerAuthentication: the mTLS mode for workloads, optionally per port."""

    selector: WorkloadSelector | None = None
    mtls: MutualTLS | None = None
    # Keys are port numbers; YAML writes them as integers or strings, both are accepted.
    port_level_mtls: dict[int | str, MutualTLS] = Field(default_factory=dict)


class PeerAuthentication(Resource):
    """`security.istio.io` PeerAuthentication."""

    GROUP: ClassVar[str] = "security.istio.io"
    KIND: ClassVar[str] = "PeerAuthentication"
    PLURAL: ClassVar[str] = "peerauthentications"
    VERSIONS: ClassVar[tuple[str, ...]] = SECURITY_VERSIONS

    spec: PeerAuthenticationSpec = Field(default_factory=PeerAuthenticationSpec)

    def check(self) -> Iterator[Finding]:
        """Port-level settings need a selector, and keys must be port numbers."""
        if self.spec.port_level_mtls and self.spec.selector is None:
            yield Finding(
                ("spec", "portLevelMtls"), "needs a selector: port-level mTLS applies to workloads"
            )
        for key in self.spec.port_level_mtls:
            text = str(key)
            if not _PORT_KEY.fullmatch(text) or not 1 <= int(text) <= 65535:
                yield Finding(("spec", "portLevelMtls", text), "keys must be port numbers")


class Source(Model):
    """Who sends the request."""

    principals: list[str] = Field(default_factory=list)
    not_principals: list[str] = Field(default_factory=list)
    request_principals: list[str] = Field(default_factory=list)
    not_request_principals: list[str] = Field(default_factory=list)
    namespaces: list[str] = Field(default_factory=list)
    not_namespaces: list[str] = Field(default_factory=list)
    ip_blocks: list[str] = Field(default_factory=list)
    not_ip_blocks: list[str] = Field(default_factory=list)
    remote_ip_blocks: list[str] = Field(default_factory=list)
    not_remote_ip_blocks: list[str] = Field(default_factory=list)
    service_accounts: list[str] = Field(default_factory=list)
    not_service_accounts: list[str] = Field(default_factory=list)


class Operation(Model):
    """What the request does."""

    hosts: list[str] = Field(default_factory=list)
    not_hosts: list[str] = Field(default_factory=list)
    ports: list[str] = Field(default_factory=list)
    not_ports: list[str] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=list)
    not_methods: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    not_paths: list[str] = Field(default_factory=list)


class RuleFrom(Model):
    """A `from` clause."""

    source: Source


class RuleTo(Model):
    """A `to` clause."""

    operation: Operation


class Condition(Model):
    """A `when` condition on a request attribute."""

    key: str
    values: list[str] = Field(default_factory=list)
    not_values: list[str] = Field(default_factory=list)


class Rule(Model):
    """A rule matches when its from, to and when clauses all match."""

    from_: list[RuleFrom] = Field(default_factory=list, alias="from")
    to: list[RuleTo] = Field(default_factory=list)
    when: list[Condition] = Field(default_factory=list)


class ExtensionProvider(Model):
    """The external authorizer of a CUSTOM policy."""

    name: str


class AuthorizationPolicySpec(Model):
    """Istio AuthorizationPolicy: who may do what to which workloads."""

    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: list[PolicyTargetReference] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    action: Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"] = "ALLOW"
    provider: ExtensionProvider | None = None


# The condition keys of Istio's reference; `[...]` keys take a header or claim name.
CONDITION_KEYS = (
    "request.headers[",
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "request.auth.claims[",
    "destination.ip",
    "destination.port",
    "connection.sni",
    "experimental.envoy.filters.",
)


class AuthorizationPolicy(Resource):
    """`security.istio.io` AuthorizationPolicy."""

    GROUP: ClassVar[str] = "security.istio.io"
    KIND: ClassVar[str] = "AuthorizationPolicy"
    PLURAL: ClassVar[str] = "authorizationpolicies"
    VERSIONS: ClassVar[tuple[str, ...]] = SECURITY_VERSIONS

    spec: AuthorizationPolicySpec = Field(default_factory=AuthorizationPolicySpec)

    def check(self) -> Iterator[Finding]:
        """Istio's rules: known condition keys, CUSTOM needs a provider, one way to target."""
        spec = self.spec
        if spec.action == "CUSTOM" and spec.provider is None:
            yield Finding(("spec", "provider"), "a CUSTOM action needs a provider")
        if spec.provider is not None and spec.action != "CUSTOM":
            yield Finding(("spec", "provider"), "only a CUSTOM action takes a provider")
        targets = [spec.selector is not None, spec.target_ref is not None, bool(spec.target_refs)]
        if sum(targets) > 1:
            yield Finding(("spec",), "give only one of selector, targetRef or targetRefs")
        for r, rule in enumerate(spec.rules):
            for c, condition in enumerate(rule.when):
                path = ("spec", "rules", r, "when", c)
                if not condition.key.startswith(CONDITION_KEYS):
                    yield Finding((*path, "key"), f"unknown condition key {condition.key!r}")
                if not condition.values and not condition.not_values:
                    yield Finding(path, "needs values or notValues")
            for f, clause in enumerate(rule.from_):
                if clause.source == Source():
                    yield Finding(("spec", "rules", r, "from", f, "source"), "must not be empty")
            for t, clause_to in enumerate(rule.to):
                if clause_to.operation == Operation():
                    yield Finding(("spec", "rules", r, "to", t, "operation"), "must not be empty")


class JWTHeader(Model):
    """A header a token may come in, with an optional prefix such as `Bearer `."""

    name: str
    prefix: str | None = None


class ClaimToHeader(Model):
    """Copy a claim into a request header."""

    header: str
    claim: str


class JWTRule(Model):
    """One accepted token issuer and how to check its tokens."""

    issuer: str
    audiences: list[str] = Field(default_factory=list)
    # Istio's CRD also accepts the proto spelling `jwks_uri` for the same URL.
    jwks_uri: str | None = Field(default=None, validation_alias=AliasChoices("jwksUri", "jwks_uri"))
    jwks: str | None = None
    from_headers: list[JWTHeader] = Field(default_factory=list)
    from_params: list[str] = Field(default_factory=list)
    from_cookies: list[str] = Field(default_factory=list)
    output_payload_to_header: str | None = None
    output_claim_to_headers: list[ClaimToHeader] = Field(default_factory=list)
    forward_original_token: bool | None = None
    timeout: Duration | None = None
    space_delimited_claims: list[str] = Field(default_factory=list)


class RequestAuthenticationSpec(Model):
    """Istio RequestAuthentication: which JWTs a workload accepts."""

    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: list[PolicyTargetReference] = Field(default_factory=list)
    jwt_rules: list[JWTRule] = Field(default_factory=list)


class RequestAuthentication(Resource):
    """`security.istio.io` RequestAuthentication."""

    GROUP: ClassVar[str] = "security.istio.io"
    KIND: ClassVar[str] = "RequestAuthentication"
    PLURAL: ClassVar[str] = "requestauthentications"
    VERSIONS: ClassVar[tuple[str, ...]] = SECURITY_VERSIONS

    spec: RequestAuthenticationSpec = Field(default_factory=RequestAuthenticationSpec)

    def check(self) -> Iterator[Finding]:
        """Each rule names its keys once: jwks or jwksUri, not both; issuers are distinct."""
        issuers: dict[str, int] = {}
        for index, rule in enumerate(self.spec.jwt_rules):
            path = ("spec", "jwtRules", index)
            if rule.jwks and rule.jwks_uri:
                yield Finding((*path, "jwks"), "give jwks or jwksUri, not both")
            if rule.jwks_uri and not rule.jwks_uri.startswith(("https://", "http://")):
                yield Finding((*path, "jwksUri"), "must be an http:// or https:// URL")
            if rule.issuer in issuers:
                yield Finding(
                    (*path, "issuer"), f"issuer is already spec.jwtRules[{issuers[rule.issuer]}]"
                )
            issuers.setdefault(rule.issuer, index)
