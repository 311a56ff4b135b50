"""The in-process change feed: the newest events in a bounded ring, and a wake-up for watchers.

A store publishes each committed change here, in revision order. Watchers that keep up read
from the ring; one that falls behind the ring (or resumes from an older version) reads the
store's change log instead, and comes back to the ring once it has caught up.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Sequence

from gossamer.control.store.model import WatchEvent


class ChangeFeed:
    """Events with contiguous revisions (first..head], at most `capacity` of them."""

    def __init__(self, head: int, capacity: int = 4096) -> None:
        assert capacity > 0
        self._ring: deque[WatchEvent] = deque(maxlen=capacity)
        self._head = head
        self._changed = asyncio.Event()
        self._closed = False
        self.gaps = 0
        """How many times a publish skipped revisions (another writer); watchers reread the log."""

    def __repr__(self) -> str:
        return f"<ChangeFeed head={self._head} holding {len(self._ring)} closed={self._closed}>"

    @property
    def head(self) -> int:
        """The newest revision published."""
        return self._head

    @property
    def closed(self) -> bool:
        """Whether the store closed: watchers end."""
        return self._closed

    def publish(self, event: WatchEvent) -> None:
        """Add the next change and wake every watcher."""
        if event.revision <= self._head:
            return
        if event.revision != self._head + 1:
            # Revisions were skipped: the ring can no longer vouch for continuity before this.
            self.gaps += 1
            self._ring.clear()
        self._ring.append(event)
        self._head = event.revision
        self._wake()

    def since(self, revision: int, limit: int) -> Sequence[WatchEvent] | None:
        """Up to `limit` events after `revision`, or None when the ring does not reach back."""
        if revision >= self._head:
            return []
        first = self._ring[0].revision if self._ring else self._head + 1
        if revision + 1 < first:
            return None
        start = revision + 1 - first
        return list(itertools.islice(self._ring, start, start + limit))

    async def wait_past(self, revision: int) -> None:
        """Return when a change after `revision` may be there, the feed closes, or on `nudge`.

        Callers loop and look again: a return is a reason to look, not a promise of news.
        """
        if self._head <= revision and not self._closed:
            await self._changed.wait()

    def nudge(self) -> None:
        """Wake every waiter, e.g. so that a closed watch notices."""
        self._wake()

    def close(self) -> None:
        """Wake every watcher for the last time."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        # A fresh Event per change: waiters of the old one all wake, new waiters wait anew.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
