"""Performing a saga step's action or compensation: one attempt, then bounded retries.

Every attempt carries the same idempotency key, `{saga id}:{step}:action` or
`{saga id}:{step}:compensation`: as the `Idempotency-Key` header of an HTTP action, as the
event id of a publish action (the broker stores an id once), in the StepContext of a call.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Literal

import httpx

from gossamer.events import tracecontext
from gossamer.events.client import BrokerError, EventsClient
from gossamer.events.outbox import REFUSED_FOR_GOOD
from gossamer.events.saga import (
    Action,
    CallAction,
    HttpAction,
    PublishAction,
    RetryPolicy,
    StepContext,
    StepRefused,
)
from gossamer.events.saga_state import GaveUp, Outcome, Refused, Succeeded, classify_status

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
Phase = Literal["action", "compensation"]
# A request that cannot be sent as written: no attempt will do better.
_MALFORMED = (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.LocalProtocolError)


def idempotency_key(saga_id: str, step: str, phase: Phase) -> str:
    """The key every attempt of one action (or compensation) of one saga carries."""
    return f"{saga_id}:{step}:{phase}"


@dataclass(frozen=True, slots=True)
class Retryable:
    """An attempt failed in a way that may pass (5xx, 408, 429, no connection, timeout)."""

    reason: str


class ActionPerformer:
    """Performs actions over one HTTP client (through the environment's proxy) and one
    events client; holds no saga state."""

    def __init__(self, http: httpx.AsyncClient, events: EventsClient) -> None:
        self._http = http
        self._events = events

    async def perform(self, action: Action, context: StepContext, retry: RetryPolicy) -> Outcome:
        """Attempt until success, a refusal, or the policy's last attempt (then GaveUp)."""
        reason = ""
        for attempt in range(1, retry.attempts + 1):
            result = await self.attempt(action, context)
            if not isinstance(result, Retryable):
                return result
            reason = result.reason
            log.warning(
                "saga %s step %s (%s): attempt %d of %d failed: %s",
                context.saga_id,
                context.step,
                context.idempotency_key.rsplit(":", 1)[1],
                attempt,
                retry.attempts,
                reason,
            )
            if attempt < retry.attempts:
                await asyncio.sleep(retry.pause_s(attempt, random.random()))
        return GaveUp(retry.attempts, reason)

    async def attempt(self, action: Action, context: StepContext) -> Outcome | Retryable:
        """One attempt of an action."""
        match action:
            case HttpAction():
                return await self._http_attempt(action, context.idempotency_key)
            case PublishAction():
                return await self._publish_attempt(action, context.idempotency_key)
            case CallAction():
                return await _call_attempt(action, context)

    async def _http_attempt(self, action: HttpAction, key: str) -> Outcome | Retryable:
        headers = tracecontext.outgoing(action.headers)
        headers[IDEMPOTENCY_HEADER] = key
        body = {} if action.body is None else {"json": action.body}
        try:
            response = await self._http.request(
                action.method,
                action.url,
                headers=headers,
                timeout=httpx.Timeout(action.timeout_s),
                **body,
            )
        except _MALFORMED as error:
            return Refused(f"{action.method} {action.url}: {error}")
        except httpx.HTTPError as error:
            return Retryable(f"{action.method} {action.url}: {type(error).__name__} {error}")
        outcome = classify_status(response.status_code, _reason(response))
        if outcome is None:
            return Retryable(f"{action.method} {action.url}: {response.status_code}")
        return outcome

    async def _publish_attempt(self, action: PublishAction, key: str) -> Outcome | Retryable:
        try:
            await self._events.publish(
                action.topic, action.payload, key=action.key, type=action.type, id=key
            )
        except BrokerError as error:
            if error.status in REFUSED_FOR_GOOD:
                return Refused(f"publish to {action.topic}: {error}")
            return Retryable(f"publish to {action.topic}: {error}")
        except httpx.HTTPError as error:
            return Retryable(f"publish to {action.topic}: {type(error).__name__} {error}")
        return Succeeded()


async def _call_attempt(action: CallAction, context: StepContext) -> Outcome | Retryable:
    try:
        async with asyncio.timeout(action.timeout_s):
            await action.function(context)
    except StepRefused as error:
        return Refused(str(error) or type(error).__name__)
    except TimeoutError:
        return Retryable(f"no answer within {action.timeout_s} s")
    except Exception as error:  # the author's code: any failure may pass next time
        return Retryable(f"{type(error).__name__}: {error}")
    return Succeeded()


def _reason(response: httpx.Response) -> str:
    """The receiver's reason: the gossamer header, else the status phrase."""
    return response.headers.get("x-gossamer-reason") or response.reason_phrase
