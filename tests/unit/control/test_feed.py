"""The change feed keeps a contiguous, bounded window of recent events and wakes waiters."""

from __future__ import annotations

import asyncio

from gossamer.control.store.feed import ChangeFeed
from gossamer.control.store.model import (
    EventType,
    ObjectKey,
    ResourceType,
    StoredObject,
    WatchEvent,
)

KEY = ObjectKey(ResourceType("", "services"), "default", "web")


def event(revision: int) -> WatchEvent:
    return WatchEvent(EventType.MODIFIED, StoredObject(KEY, revision, {}))


def revisions(events: object) -> list[int]:
    assert isinstance(events, list)
    return [e.revision for e in events]


def test_since_returns_what_follows_a_revision_up_to_a_limit() -> None:
    feed = ChangeFeed(head=10, capacity=4)
    for revision in range(11, 15):
        feed.publish(event(revision))
    assert revisions(feed.since(10, 100)) == [11, 12, 13, 14]
    assert revisions(feed.since(12, 1)) == [13]
    assert feed.since(14, 100) == []
    assert feed.since(99, 100) == []


def test_since_says_none_when_the_window_does_not_reach_back() -> None:
    feed = ChangeFeed(head=10, capacity=3)
    assert feed.since(9, 10) is None  # before the feed existed
    for revision in range(11, 16):
        feed.publish(event(revision))
    assert revisions(feed.since(12, 10)) == [13, 14, 15]
    assert feed.since(11, 10) is None


def test_a_gap_in_revisions_restarts_the_window() -> None:
    feed = ChangeFeed(head=0, capacity=10)
    feed.publish(event(1))
    feed.publish(event(1))  # a repeat is ignored
    feed.publish(event(5))
    assert feed.gaps == 1
    assert feed.since(0, 10) is None
    assert revisions(feed.since(4, 10)) == [5]


async def test_waiters_wake_on_publish_and_on_close() -> None:
    feed = ChangeFeed(head=0)
    waiter = asyncio.ensure_future(feed.wait_past(0))
    await asyncio.sleep(0)
    assert not waiter.done()
    feed.publish(event(1))
    await asyncio.wait_for(waiter, 1)
    await asyncio.wait_for(feed.wait_past(0), 1)  # already past: returns at once
    closing = asyncio.ensure_future(feed.wait_past(1))
    await asyncio.sleep(0)
    feed.close()
    await asyncio.wait_for(closing, 1)
    assert feed.closed
