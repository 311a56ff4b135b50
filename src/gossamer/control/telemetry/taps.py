"""Taps on the control plane's side: a tap asks every connected proxy that takes taps, over its
config stream, for summaries of matching requests (`TapStart`), hands their `TapEvents` to the
one client that asked, and ends: after `max_events`, after `duration_s`, or when the client goes,
with a `TapStop` to each proxy (which end it by themselves anyway, at the same bounds)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gossamer.snapshot.protocol import TapEvent, TapEvents, TapFilter, TapStart, TapStop, encode

log = logging.getLogger(__name__)

QUEUE_EVENTS = 1024
"""Events waiting for a slow tap client; past it they are dropped and counted."""
MAX_TAPS = 16
"""Taps running at once on one control plane."""

Send = Callable[[bytes], Awaitable[None]]


class TapLimitError(Exception):
    """Too many taps run already."""


@dataclass(slots=True)
class TapSession:
    """One client's tap."""

    id: str
    filter: TapFilter
    max_events: int
    duration_s: float
    queue: asyncio.Queue[TapEvent] = field(default_factory=lambda: asyncio.Queue(QUEUE_EVENTS))
    proxies: set[str] = field(default_factory=set)
    dropped: int = 0
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class TapHub:
    """The proxies that take taps, and the taps running."""

    def __init__(self) -> None:
        self.streams: dict[str, Send] = {}
        self.sessions: dict[str, TapSession] = {}
        self._ids = itertools.count(1)
        self.started = 0

    def __repr__(self) -> str:
        return f"<TapHub {len(self.streams)} proxies, {len(self.sessions)} taps>"

    def attach(self, stream_id: str, send: Send) -> None:
        """A proxy that takes taps connected."""
        self.streams[stream_id] = send

    def detach(self, stream_id: str) -> None:
        """Its stream ended: taps stop waiting for it."""
        self.streams.pop(stream_id, None)
        for session in self.sessions.values():
            session.proxies.discard(stream_id)
            if not session.proxies:
                session.ended.set()

    async def open(self, wanted: TapFilter, max_events: int, duration_s: float) -> TapSession:
        """Start a tap on every proxy that takes taps."""
        if len(self.sessions) >= MAX_TAPS:
            raise TapLimitError(f"{MAX_TAPS} taps run already; try again when one ends")
        session = TapSession(f"tap-{next(self._ids)}", wanted, max_events, duration_s)
        self.sessions[session.id] = session
        self.started += 1
        message = encode(TapStart(session.id, wanted, max_events, duration_s))
        for stream_id, send in list(self.streams.items()):
            with contextlib.suppress(Exception):
                await send(message)
                session.proxies.add(stream_id)
        if not session.proxies:
            session.ended.set()
        return session

    def receive(self, stream_id: str, message: TapEvents) -> None:
        """A proxy's events, for the session that asked (late ones of an ended tap are let go)."""
        session = self.sessions.get(message.id)
        if session is None:
            return
        session.dropped += message.dropped
        for event in message.events:
            try:
                session.queue.put_nowait(event)
            except asyncio.QueueFull:
                session.dropped += 1
        if message.ended:
            session.proxies.discard(stream_id)
            if not session.proxies:
                session.ended.set()

    async def close(self, session: TapSession) -> None:
        """End a tap: every proxy still on it is told to stop."""
        self.sessions.pop(session.id, None)
        message = encode(TapStop(session.id))
        for stream_id in list(session.proxies):
            send = self.streams.get(stream_id)
            if send is not None:
                with contextlib.suppress(Exception):
                    await send(message)
        session.proxies.clear()
