"""AuthorizationPolicy on opaque TCP connections, after Istio's TCP traffic task.

A connection is judged by its peer and destination port only: ALLOW rules that read HTTP-only
attributes never match, DENY rules have those attributes removed and deny more.
"""

from __future__ import annotations

import pytest

from gossamer.security.authz import Authorizer, AuthzRequest
from gossamer.security.authz_tcp import tcp_policies
from gossamer.snapshot import AuthzCondition, AuthzOperation, AuthzPolicy, AuthzRule, AuthzSource
from gossamer.snapshot.model import AuthzAction

SLEEP = "cluster.local/ns/foo/sa/sleep"
OTHER = "cluster.local/ns/bar/sa/client"


def policy(action: AuthzAction, *rules: AuthzRule) -> AuthzPolicy:
    return AuthzPolicy(name=f"foo/{action.lower()}", action=action, rules=rules)


def connection(port: int, principal: str = SLEEP) -> AuthzRequest:
    return AuthzRequest(method="", path="", host="", port=port, source_principal=principal)


def allowed(policies: tuple[AuthzPolicy, ...], request: AuthzRequest) -> bool:
    return Authorizer(tcp_policies(policies)).check(request).allowed


PORTS = AuthzOperation(ports=("9000", "9001"))
GET = AuthzOperation(methods=("GET",))


@pytest.mark.parametrize(
    ("policies", "port", "expected"),
    [
        # Allow ports 9000 and 9001: 9002 is denied.
        ((policy("ALLOW", AuthzRule(operations=(PORTS,))),), 9000, True),
        ((policy("ALLOW", AuthzRule(operations=(PORTS,))),), 9002, False),
        # An ALLOW rule that also names methods never matches a connection: all denied.
        (
            (
                policy(
                    "ALLOW",
                    AuthzRule(operations=(AuthzOperation(ports=("9000",), methods=("GET",)),)),
                ),
            ),
            9000,
            False,
        ),
        # ...but another rule of the same policy still can.
        (
            (policy("ALLOW", AuthzRule(operations=(GET,)), AuthzRule(operations=(PORTS,))),),
            9001,
            True,
        ),
        # A DENY of GET on 9000 loses its method and denies every connection to 9000.
        (
            (
                policy(
                    "DENY",
                    AuthzRule(operations=(AuthzOperation(ports=("9000",), methods=("GET",)),)),
                ),
            ),
            9000,
            False,
        ),
        (
            (
                policy(
                    "DENY",
                    AuthzRule(operations=(AuthzOperation(ports=("9000",), methods=("GET",)),)),
                ),
            ),
            9001,
            True,
        ),
        # Request principals and request.* conditions are HTTP-only too.
        (
            (policy("ALLOW", AuthzRule(sources=(AuthzSource(request_principals=("*",)),))),),
            9000,
            False,
        ),
        (
            (
                policy(
                    "DENY",
                    AuthzRule(
                        operations=(PORTS,),
                        conditions=(AuthzCondition(key="request.headers[x-a]", values=("b",)),),
                    ),
                ),
            ),
            9000,
            False,
        ),
    ],
)
def test_http_only_fields_follow_istio(
    policies: tuple[AuthzPolicy, ...], port: int, expected: bool
) -> None:
    assert allowed(policies, connection(port)) is expected


def test_the_peer_is_judged_by_principal_and_namespace() -> None:
    deny_foo = policy("DENY", AuthzRule(sources=(AuthzSource(namespaces=("foo",)),)))
    assert not allowed((deny_foo,), connection(9000, SLEEP))
    assert allowed((deny_foo,), connection(9000, OTHER))
    only_sleep = policy("ALLOW", AuthzRule(sources=(AuthzSource(principals=(SLEEP,)),)))
    assert allowed((only_sleep,), connection(9000, SLEEP))
    assert not allowed((only_sleep,), connection(9000, OTHER))
    # A plaintext connection has no principal: a principal rule cannot allow it.
    assert not allowed((only_sleep,), connection(9000, ""))


def test_rules_without_http_fields_are_kept_as_they_are() -> None:
    plain = (
        policy("ALLOW", AuthzRule(operations=(PORTS,))),
        policy("DENY", AuthzRule(sources=(AuthzSource(namespaces=("bar",)),))),
    )
    assert tcp_policies(plain) == plain
