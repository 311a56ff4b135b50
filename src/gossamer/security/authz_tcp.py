"""AuthorizationPolicy for opaque TCP connections: the policies as a connection can be judged.

A TCP connection has a peer (principal, namespace, IP) and a destination port, but no method,
path, host, request principal, header or claim. Istio compiles a rule that reads any of these
HTTP-only attributes differently by action, and so does this module:

- ALLOW (and AUDIT): the rule is dropped, as it can never match. A policy left with no rule
  matches nothing, so with only such ALLOW policies every connection is denied.
- DENY: the HTTP-only fields are dropped and the rest of the rule still applies, so the policy
  denies more rather than less (a DENY of `GET` on port 6379 closes every connection to 6379).

The result is an ordinary policy list for `Authorizer`, built once per snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from gossamer.snapshot.model import (
    AuthzCondition,
    AuthzOperation,
    AuthzPolicy,
    AuthzRule,
    AuthzSource,
)

__all__ = ["tcp_policies"]

# Conditions on what only an HTTP request carries: request.headers[...], request.auth.*.
_HTTP_CONDITION_PREFIX = "request."


def tcp_policies(policies: Sequence[AuthzPolicy]) -> tuple[AuthzPolicy, ...]:
    """The policies as they apply to TCP connections (see the module docstring)."""
    return tuple(_for_tcp(policy) for policy in policies)


def _for_tcp(policy: AuthzPolicy) -> AuthzPolicy:
    if policy.action == "DENY":
        rules = tuple(_without_http_fields(rule) for rule in policy.rules)
    else:
        rules = tuple(rule for rule in policy.rules if not _reads_http(rule))
    return msgspec.structs.replace(policy, rules=rules)


def _reads_http(rule: AuthzRule) -> bool:
    """Whether any part of the rule needs an HTTP request to be judged."""
    return (
        any(_source_reads_http(source) for source in rule.sources)
        or any(_operation_reads_http(operation) for operation in rule.operations)
        or any(_http_condition(condition) for condition in rule.conditions)
    )


def _source_reads_http(source: AuthzSource) -> bool:
    return bool(source.request_principals or source.not_request_principals)


def _operation_reads_http(operation: AuthzOperation) -> bool:
    return bool(
        operation.hosts
        or operation.not_hosts
        or operation.methods
        or operation.not_methods
        or operation.paths
        or operation.not_paths
    )


def _http_condition(condition: AuthzCondition) -> bool:
    return condition.key.startswith(_HTTP_CONDITION_PREFIX)


def _without_http_fields(rule: AuthzRule) -> AuthzRule:
    """A DENY rule with its HTTP-only parts removed. A source or operation that had only such
    fields becomes empty, and an empty one matches anything: Istio's "ignore the field"."""
    return AuthzRule(
        sources=tuple(_source_without_http(s) for s in rule.sources),
        operations=tuple(_operation_without_http(o) for o in rule.operations),
        conditions=tuple(c for c in rule.conditions if not _http_condition(c)),
    )


def _source_without_http(source: AuthzSource) -> AuthzSource:
    return msgspec.structs.replace(source, request_principals=(), not_request_principals=())


def _operation_without_http(operation: AuthzOperation) -> AuthzOperation:
    return msgspec.structs.replace(
        operation, hosts=(), not_hosts=(), methods=(), not_methods=(), paths=(), not_paths=()
    )
