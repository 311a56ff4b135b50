"""A watch as an HTTP response: one JSON event per line until the deadline, an error, or a hangup.

Lines are Kubernetes watch events, `{"type": "ADDED", "object": {...}}`. When the store can no
longer continue (history trimmed past a slow watcher, the store gone), the last line is an
`ERROR` event whose object is a `Status` (410 Expired: list again; 503: watch again later).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gossamer.control.api.status import from_store
from gossamer.control.store.errors import StoreError
from gossamer.control.store.model import EventType, StoredObject, Watch, WatchEvent

Present = Callable[[StoredObject], Mapping[str, Any]]
MEDIA_TYPE = "application/json"
"""As Kubernetes sends watches in JSON: one object per line."""


def event_line(kind: str, obj: Mapping[str, Any]) -> bytes:
    """One newline-terminated JSON event."""
    return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"


class WatchResponse(StreamingResponse):
    """A streaming response that owns its watch: closed however the response ends, even when
    the client hangs up before the first line."""

    def __init__(
        self,
        watch: Watch,
        initial: Iterable[StoredObject],
        present: Present,
        timeout_s: float,
        on_end: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(watch_lines(watch, initial, present, timeout_s), media_type=MEDIA_TYPE)
        self._watch = watch
        self._on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_end()
            await self._watch.aclose()


async def watch_lines(
    watch: Watch,
    initial: Iterable[StoredObject],
    present: Present,
    timeout_s: float,
) -> AsyncIterator[bytes]:
    """Events as lines: ADDED for each `initial` object, then the watch's, for `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    try:
        for stored in initial:
            yield event_line(EventType.ADDED.value, present(stored))
        while True:
            event = await _next_before(watch, deadline)
            if event is None:
                return
            yield event_line(event.type.value, present(event.object))
    except StoreError as error:
        yield event_line("ERROR", from_store(error).body())


async def _next_before(watch: Watch, deadline: float) -> WatchEvent | None:
    """The next event, or None when the watch ends or the deadline passes first."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    try:
        # The timeout ends before the caller yields, so it never spans the client's writes.
        async with asyncio.timeout(remaining):
            return await anext(watch)
    except (TimeoutError, StopAsyncIteration):
        return None
