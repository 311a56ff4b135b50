"""Event consumers: an event taken from a subscription is handled under its publisher's trace.

Until the next event is taken, what the consumer publishes and the HTTP calls it makes continue
the trace in the event's `traceparent` header, as `with event.trace():` would do by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import Any

from gossamer.tracehook import context
from gossamer.tracehook.patching import Patcher

Next = Callable[[Any], Coroutine[Any, Any, Any]]


def patch_subscription(module: ModuleType, patcher: Patcher) -> None:
    """Subscription.__anext__, awaited by `async for` in the consumer's own task, so what it
    sets is that task's context."""

    def wrap_next(next_event: Next) -> Next:
        async def traced_next(subscription: Any) -> Any:
            try:
                event = await next_event(subscription)
            except StopAsyncIteration:
                context.handle_event(None)
                raise
            context.handle_event(event.trace_context)
            return event

        return traced_next

    patcher.wrap(module.Subscription, "__anext__", wrap_next)
