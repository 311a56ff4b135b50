"""Which endings of a try each `retry_on` condition covers, as Envoy's retry state decides."""

from __future__ import annotations

import pytest

from gossamer.proxy.retry_state import (
    CONNECT_FAILURE,
    PER_TRY_TIMEOUT,
    RESET,
    Failure,
    may_retry,
    repeatable,
    retriable_failure,
    retriable_status,
)
from gossamer.snapshot import RetryPolicy


def policy(*retry_on: str, codes: tuple[int, ...] = ()) -> RetryPolicy:
    return RetryPolicy(retry_on=retry_on, retriable_status_codes=codes)


@pytest.mark.parametrize("failure", [RESET, PER_TRY_TIMEOUT])
@pytest.mark.parametrize(
    ("retry_on", "retried"),
    [
        (("reset",), True),
        (("5xx",), True),
        (("gateway-error",), True),
        (("connect-failure",), False),
        (("refused-stream",), False),
        (("retriable-4xx",), False),
        (("retriable-status-codes",), False),
        ((), False),
        (("connect-failure", "refused-stream", "gateway-error"), True),  # the default
    ],
)
def test_a_try_reset_or_timed_out_is_retried_on_reset_5xx_or_gateway_error(
    failure: Failure, retry_on: tuple[str, ...], retried: bool
) -> None:
    assert retriable_failure(failure, policy(*retry_on)) is retried


@pytest.mark.parametrize(
    ("retry_on", "retried"),
    [
        (("connect-failure",), True),
        (("reset",), True),
        (("5xx",), True),
        (("gateway-error",), True),
        (("refused-stream",), False),
        (("retriable-4xx",), False),
        ((), False),
    ],
)
def test_a_connection_not_made_is_retried_on_connect_failure_and_on_any_reset_condition(
    retry_on: tuple[str, ...], retried: bool
) -> None:
    assert retriable_failure(CONNECT_FAILURE, policy(*retry_on)) is retried


@pytest.mark.parametrize(
    ("status", "retry_on", "codes", "retried"),
    [
        (500, ("5xx",), (), True),
        (503, ("5xx",), (), True),
        (500, ("gateway-error",), (), False),
        (502, ("gateway-error",), (), True),
        (504, ("gateway-error",), (), True),
        (503, ("reset", "connect-failure"), (), False),
        (409, ("retriable-4xx",), (), True),
        (409, ("5xx",), (), False),
        (429, ("retriable-status-codes",), (429,), True),
        (429, ("5xx",), (429,), False),
        (404, ("5xx", "gateway-error", "retriable-4xx"), (), False),
        (200, ("retriable-status-codes",), (), False),
    ],
)
def test_a_response_is_retried_when_a_condition_names_its_status(
    status: int, retry_on: tuple[str, ...], codes: tuple[int, ...], retried: bool
) -> None:
    assert retriable_status(status, policy(*retry_on, codes=codes)) is retried


@pytest.mark.parametrize(
    ("retries", "failure", "replayable", "method", "retried"),
    [
        (0, RESET, True, b"GET", True),
        (1, RESET, True, b"GET", False),  # attempts=1: no tries left
        (0, RESET, False, b"GET", False),  # the body was too large to keep
        (0, RESET, True, b"POST", False),  # sent, and not safe to repeat
        (0, CONNECT_FAILURE, True, b"POST", True),  # never sent
        (0, None, True, b"GET", True),  # a retriable status
    ],
)
def test_may_retry_weighs_tries_left_replay_and_idempotency(
    retries: int, failure: Failure | None, replayable: bool, method: bytes, retried: bool
) -> None:
    retry = RetryPolicy(attempts=1, retry_on=("reset", "connect-failure", "5xx"))
    assert may_retry(retry, retries, failure, replayable=replayable, method=method) is retried


def test_non_idempotent_requests_are_retried_when_the_policy_says_so() -> None:
    retry = RetryPolicy(attempts=2, retry_on=("reset",), retry_non_idempotent=True)
    assert may_retry(retry, 0, RESET, replayable=True, method=b"POST")
    assert repeatable(b"POST", retry) and not repeatable(b"POST", None)
    assert not may_retry(None, 0, RESET, replayable=True, method=b"GET")
