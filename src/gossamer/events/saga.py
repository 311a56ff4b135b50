"""Declaring sagas: ordered steps, each an action with its compensation, templated from input.

```python
from gossamer.events.saga import Saga, Step, call, http, publish

unsubscribe = Saga("unsubscribe-user", steps=[
    Step("revoke-tokens",
         action=http("POST", "http://auth-svc:8080/auth/users/{userId}/revoke"),
         compensation=http("POST", "http://auth-svc:8080/auth/users/{userId}/restore")),
    Step("cancel-billing",
         action=http("DELETE", "http://billing:8080/subscriptions/{userId}"),
         compensation=http("POST", "http://billing:8080/subscriptions",
                           body={"userId": "{userId}", "plan": "{plan}"})),
    Step("announce", action=publish("users", {"userId": "{userId}"}, type="UserLeft")),
])
```

A string in a URL, header or body is a template: `{name}` is the saga's input `name` (and
`{sagaId}` its id). A body string that is one placeholder and nothing else takes the input's
value with its JSON type (`"{amount}"` stays a number); values put into a URL are
percent-encoded. Running a saga is `gossamer.events.saga_runner.SagaRunner`.
"""

from __future__ import annotations

import string
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

__all__ = [
    "Action",
    "CallAction",
    "HttpAction",
    "PublishAction",
    "RetryPolicy",
    "Saga",
    "Step",
    "StepContext",
    "StepRefused",
    "call",
    "http",
    "publish",
]

_FORMATTER = string.Formatter()


class StepRefused(Exception):  # noqa: N818 - an answer, like HTTP's 4xx, not a crash
    """Raised by a `call` action when retrying cannot help (the step failed for good)."""


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a `call` action is given: which saga, its input, and the key to do it once by."""

    saga_id: str
    saga: str
    step: str
    data: Mapping[str, Any]
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class HttpAction:
    """An HTTP request with a JSON body, sent through the environment's proxy (the sidecar)."""

    method: str
    url: str
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0

    def render(self, context: Mapping[str, Any]) -> HttpAction:
        """The request with every template filled from `context`; KeyError for a missing name."""
        return HttpAction(
            self.method,
            render_text(self.url, context, url=True),
            render_json(self.body, context),
            {name: render_text(value, context) for name, value in self.headers.items()},
            self.timeout_s,
        )


@dataclass(frozen=True, slots=True)
class PublishAction:
    """Publishing one event; its id is the step's idempotency key, so it is stored once."""

    topic: str
    payload: Any
    key: str | None = None
    type: str | None = None

    def render(self, context: Mapping[str, Any]) -> PublishAction:
        """The event with every template filled from `context`."""
        key = None if self.key is None else render_text(self.key, context)
        return PublishAction(self.topic, render_json(self.payload, context), key, self.type)


@dataclass(frozen=True, slots=True)
class CallAction:
    """A coroutine of the service's own (local work, e.g. in its database)."""

    function: Callable[[StepContext], Awaitable[None]]
    timeout_s: float = 30.0

    def render(self, context: Mapping[str, Any]) -> CallAction:
        """Itself: the function reads the input from its StepContext."""
        return self


Action = HttpAction | PublishAction | CallAction


def http(
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
) -> HttpAction:
    """An HTTP action: `http("POST", "http://auth-svc:8080/users/{userId}/revoke")`."""
    return HttpAction(method.upper(), url, body, dict(headers or {}), timeout_s)


def publish(
    topic: str, payload: Any, *, key: str | None = None, type: str | None = None
) -> PublishAction:
    """An action that publishes an event: `publish("users", {"userId": "{userId}"})`."""
    return PublishAction(topic, payload, key, type)


def call(
    function: Callable[[StepContext], Awaitable[None]], *, timeout_s: float = 30.0
) -> CallAction:
    """An action that awaits `function(context)`; raise StepRefused to fail for good."""
    return CallAction(function, timeout_s)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts of one action, and the pauses between them (doubling, with jitter)."""

    attempts: int = 5
    backoff_s: float = 0.2
    backoff_max_s: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a retry policy needs at least one attempt")
        if self.backoff_s < 0 or self.backoff_max_s < self.backoff_s:
            raise ValueError("backoff must be 0 <= backoff_s <= backoff_max_s")

    def pause_s(self, failed_attempts: int, jitter: float) -> float:
        """The pause after `failed_attempts` failures; `jitter` in [0, 1] takes up to half."""
        base = min(self.backoff_max_s, self.backoff_s * 2.0 ** max(0, failed_attempts - 1))
        return base * (1.0 - jitter / 2)


@dataclass(frozen=True, slots=True)
class Step:
    """One step: an action, and the compensation that undoes it (None: nothing to undo)."""

    name: str
    action: Action
    compensation: Action | None = None
    retry: RetryPolicy | None = None


@dataclass(frozen=True, slots=True)
class Saga:
    """A saga definition: a name and ordered steps, checked once when declared.

    `retry` bounds each action; `compensation_retry` each compensation, after which the saga
    is `stuck` rather than retrying forever.
    """

    name: str
    steps: Sequence[Step]
    retry: RetryPolicy = RetryPolicy()
    compensation_retry: RetryPolicy = RetryPolicy(attempts=10)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.name or not self.steps:
            raise ValueError("a saga needs a name and at least one step")
        names = [step.name for step in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"saga {self.name}: step names must be unique: {names}")
        for name in names:
            if not name or ":" in name:
                raise ValueError(f"saga {self.name}: step name {name!r} is empty or has ':'")

    def index(self, step: str) -> int:
        """The position of a step by name; ValueError if there is none."""
        for position, candidate in enumerate(self.steps):
            if candidate.name == step:
                return position
        raise ValueError(f"saga {self.name} has no step {step!r}")

    def check_input(self, saga_id: str, data: Mapping[str, Any]) -> None:
        """Render every template against `data`: KeyError names an input the steps need."""
        context = template_context(saga_id, self.name, data)
        for step in self.steps:
            step.action.render(context)
            if step.compensation is not None:
                step.compensation.render(context)


def template_context(saga_id: str, saga: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The names a template may use: the input's, plus `sagaId` and `saga`."""
    return {**data, "sagaId": saga_id, "saga": saga}


def render_text(template: str, context: Mapping[str, Any], *, url: bool = False) -> str:
    """`template` with `{name}` replaced; in a URL the values are percent-encoded."""
    if not url:
        return template.format_map(context)
    parts: list[str] = []
    for literal, name, spec, conversion in _FORMATTER.parse(template):
        parts.append(literal)
        if name is not None:
            value = _FORMATTER.get_field(name, (), context)[0]
            value = _FORMATTER.convert_field(value, conversion)
            parts.append(quote(format(value, spec or ""), safe=""))
    return "".join(parts)


def render_json(value: Any, context: Mapping[str, Any]) -> Any:
    """A JSON value with every string rendered; `"{name}"` alone keeps the value's type."""
    if isinstance(value, str):
        whole = _sole_placeholder(value)
        if whole is not None:
            return _FORMATTER.get_field(whole, (), context)[0]
        return value.format_map(context)
    if isinstance(value, Mapping):
        return {key: render_json(item, context) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render_json(item, context) for item in value]
    return value


def _sole_placeholder(text: str) -> str | None:
    parsed = list(_FORMATTER.parse(text))
    if len(parsed) == 1:
        literal, name, spec, conversion = parsed[0]
        if literal == "" and name and not spec and conversion is None:
            return name
    return None
