"""Whether a route's `retry_on` covers how a try ended: Envoy's retry state, without the budget.

A try ends with a response, whose status a condition may name, or without one. Envoy treats
every try that ends without a response as a reset of its stream: the upstream closed or broke
the connection, the per-try timeout reset the stream, or no connection could be made. A reset
is retried under `reset`, and under `5xx` and `gateway-error` too, since the client would see
one of those codes; a connection that could not be made is also retried under
`connect-failure`. `may_retry` adds attempts left, replay and idempotency;
the retry budget is the cluster's (`ClusterState.retry_allowed`).
"""

from __future__ import annotations

from typing import Final, Literal

from gossamer.snapshot import RetryPolicy

Failure = Literal["connect-failure", "reset", "per-try-timeout"]
"""How a try ended without a response."""

CONNECT_FAILURE: Final = "connect-failure"
RESET: Final = "reset"
PER_TRY_TIMEOUT: Final = "per-try-timeout"

_RESET_CONDITIONS: Final = ("reset", "5xx", "gateway-error")


def retriable_status(status: int, policy: RetryPolicy) -> bool:
    """Whether `retry_on` names a response with this status."""
    if status < 500 and status != 409 and status not in policy.retriable_status_codes:
        return False
    on = policy.retry_on
    if status >= 500 and "5xx" in on:
        return True
    if status in (502, 503, 504) and "gateway-error" in on:
        return True
    if status == 409 and "retriable-4xx" in on:
        return True
    return status in policy.retriable_status_codes and "retriable-status-codes" in on


def retriable_failure(failure: Failure, policy: RetryPolicy) -> bool:
    """Whether `retry_on` covers a try that ended without a response."""
    on = policy.retry_on
    for condition in _RESET_CONDITIONS:
        if condition in on:
            return True
    return failure == CONNECT_FAILURE and CONNECT_FAILURE in on


IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


def repeatable(method: bytes, policy: RetryPolicy | None) -> bool:
    """Whether a request the upstream may have acted on is safe to send again."""
    return method in IDEMPOTENT or (policy is not None and policy.retry_non_idempotent)


def may_retry(
    policy: RetryPolicy | None,
    retries: int,
    failure: Failure | None,
    *,
    replayable: bool,
    method: bytes,
) -> bool:
    """Whether a try may be followed by another, the cluster's retry budget aside.

    `retries`: how many were made already; `failure`: how the try ended without a response, or
    None for a response whose status `retry_on` names. A try whose request was sent (anything
    but a connect failure) is repeated only when the method is idempotent or the policy says
    non-idempotent requests may be; a body too large to keep cannot be sent again.
    """
    if policy is None or retries >= policy.attempts:
        return False
    if failure is not None and not retriable_failure(failure, policy):
        return False
    if not replayable:
        return False
    return failure == CONNECT_FAILURE or repeatable(method, policy)
