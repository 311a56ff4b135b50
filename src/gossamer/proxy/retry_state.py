"""Whether a route's `retry_on` covers how a try ended: Envoy's retry state, without the budget.

A try ends with a response, whose status a condition may name, or without one. Envoy treats
every try that ends without a response as a reset of its stream: the upstream closed or broke
the connection, the per-try timeout reset the stream, or no connection could be made. A reset
is retried under `reset`, and under `5xx` and `gateway-error` too, since the client would see
one of those codes; a connection that could not be made is also retried under
`connect-failure`. Attempts left, replay and idempotency are decided by the exchange.
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
