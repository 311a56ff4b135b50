"""A watch becomes lines: events, then an ERROR Status when the store gives up, or nothing more."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Self

from gossamer.control.api.watchstream import watch_lines
from gossamer.control.store import (
    EventType,
    ExpiredError,
    ObjectKey,
    ResourceType,
    StoredObject,
    WatchEvent,
)

KEY = ObjectKey(ResourceType("", "services"), "default", "web")
WEB = StoredObject(KEY, 7, {"metadata": {"name": "web", "resourceVersion": "7"}})


class ScriptedWatch:
    """Yields the given events, then raises the given error (or waits forever)."""

    def __init__(self, events: list[WatchEvent], error: Exception | None = None) -> None:
        self.events = list(events)
        self.error = error

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> WatchEvent:
        if self.events:
            return self.events.pop(0)
        if self.error is not None:
            raise self.error
        await _forever()
        raise AssertionError

    async def aclose(self) -> None:
        self.events.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _forever() -> None:
    await asyncio.Event().wait()


async def _lines(stream: AsyncIterator[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) async for line in stream]


async def test_initial_objects_then_events_then_an_error_status() -> None:
    watch = ScriptedWatch([WatchEvent(EventType.DELETED, WEB)], ExpiredError(3, 10))
    lines = await _lines(watch_lines(watch, [WEB], lambda o: o.body, 60.0))
    assert [line["type"] for line in lines] == ["ADDED", "DELETED", "ERROR"]
    assert lines[2]["object"]["code"] == 410
    assert lines[2]["object"]["reason"] == "Expired"


async def test_the_stream_ends_quietly_at_its_deadline() -> None:
    watch = ScriptedWatch([WatchEvent(EventType.ADDED, WEB)])
    lines = await _lines(watch_lines(watch, [], lambda o: o.body, 0.05))
    assert [line["type"] for line in lines] == ["ADDED"]
