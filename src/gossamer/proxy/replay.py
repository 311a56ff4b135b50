"""A request body kept so that it can be sent again (a retry, a mirror), up to a bound."""

from __future__ import annotations

from typing import Final

BUFFERING: Final = 0
"""Every chunk is kept as well as sent: the request can be tried again and mirrored."""
OVERFLOWED: Final = 1
"""Past the bound before any upstream took the request: held, the client paused, until one does."""
STREAMING: Final = 2
"""Past the bound and sent: chunks go straight upstream, nothing is kept, no retry."""


class ReplayBuffer:
    """The body chunks of one request, in the framing the upstream gets, with explicit states."""

    __slots__ = ("chunks", "limit", "size", "state")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        """Bytes kept while buffering (what a retry or a mirror would resend)."""
        self.state = BUFFERING

    def replayable(self) -> bool:
        """Whether the whole body is at hand to send again."""
        return self.state == BUFFERING

    def add(self, chunk: bytes, sent: bool) -> bool:
        """Take a chunk (`sent`: an upstream has the request); True while it must be held with the
        client paused (too large to keep, nowhere to send it yet)."""
        state = self.state
        if state == BUFFERING:
            self.chunks.append(chunk)
            self.size += len(chunk)
            if self.size > self.limit:
                # Too large to replay. Once sent, nothing need be kept; until then (a request
                # queued behind others, or waiting for a connection) the body waits here.
                if sent:
                    self.state = STREAMING
                    self.chunks.clear()
                else:
                    self.state = OVERFLOWED
        elif state == OVERFLOWED:
            self.chunks.append(chunk)
        return self.state == OVERFLOWED and not sent

    def end(self, chunk: bytes) -> None:
        """The body's last chunk (chunked framing): kept unless the body is streaming."""
        if self.state != STREAMING:
            self.chunks.append(chunk)

    def sent(self) -> bool:
        """An upstream took what is held; True when a held body was let go (resume reading)."""
        if self.state != OVERFLOWED:
            return False
        self.state = STREAMING
        self.chunks.clear()
        return True
