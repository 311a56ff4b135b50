"""The replay buffer's states: buffering, overflowed (held until sent), streaming."""

from __future__ import annotations

from gossamer.proxy.replay import BUFFERING, OVERFLOWED, STREAMING, ReplayBuffer


def test_a_body_within_the_bound_is_kept_for_a_replay() -> None:
    buffer = ReplayBuffer(10)
    assert not buffer.add(b"12345", sent=True)
    buffer.end(b"0\r\n\r\n")
    assert buffer.state == BUFFERING and buffer.replayable()
    assert buffer.chunks == [b"12345", b"0\r\n\r\n"] and buffer.size == 5
    assert not buffer.sent()


def test_a_body_past_the_bound_after_sending_streams_and_keeps_nothing() -> None:
    buffer = ReplayBuffer(4)
    assert not buffer.add(b"12345", sent=True)
    assert buffer.state == STREAMING and not buffer.replayable() and buffer.chunks == []
    assert not buffer.add(b"more", sent=True) and buffer.chunks == []


def test_a_body_past_the_bound_before_sending_is_held_until_an_upstream_takes_it() -> None:
    buffer = ReplayBuffer(4)
    assert buffer.add(b"12345", sent=False)  # hold, and pause the client
    assert buffer.state == OVERFLOWED and buffer.add(b"6", sent=False)
    assert buffer.chunks == [b"12345", b"6"]
    assert buffer.sent()  # resume the client: the rest streams
    assert buffer.state == STREAMING and buffer.chunks == []
