"""Waiting without sleeping for a fixed time: poll a condition until it holds or a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from gossamer.proxy import Proxy

POLL = 0.005


async def eventually(
    condition: Callable[[], bool], *, timeout: float = 5.0, what: str = ""
) -> None:
    """Return once `condition()` is true; fail the test if it is not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what or condition}")
        await asyncio.sleep(POLL)


def idle(proxy: Proxy) -> bool:
    """No client connection open, no request in flight, no upstream connection left over."""
    return (
        proxy.active_requests == 0
        and not any(handle.connections for handle in proxy.listeners.values())
        and all(cluster.counters.connections == 0 for cluster in proxy.clusters.values())
    )


class LoopErrors:
    """Records whatever reaches the event loop's exception handler."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def install(self, loop: asyncio.AbstractEventLoop) -> LoopErrors:
        loop.set_exception_handler(lambda _loop, context: self.seen.append(context))
        return self
