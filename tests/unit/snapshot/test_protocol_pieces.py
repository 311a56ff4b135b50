"""Large stream messages go in pieces and come back whole; small ones go as they are."""

from __future__ import annotations

import pytest

from gossamer.snapshot import SnapshotError
from gossamer.snapshot.protocol import MAX_MESSAGE_BYTES, PIECE_BYTES, Reassembly, pieces


def test_a_small_message_goes_as_it_is() -> None:
    message = b'{"type":"ack","version":"3"}'
    assert pieces(message) == [message]
    assert Reassembly().feed(message) == message
    assert Reassembly().feed('{"type":"ack"}') == '{"type":"ack"}'


@pytest.mark.parametrize("size", [PIECE_BYTES + 1, 3 * PIECE_BYTES, 3 * PIECE_BYTES + 17])
def test_a_large_message_goes_in_pieces_none_larger_than_the_bound(size: int) -> None:
    message = b"{" + bytes(range(256)) * (size // 256) + b"}"
    sent = pieces(message)
    assert len(sent) > 1
    assert all(len(piece) <= PIECE_BYTES + 1 for piece in sent)
    reassembly = Reassembly()
    received = [reassembly.feed(piece) for piece in sent]
    assert received[:-1] == [None] * (len(sent) - 1)
    assert received[-1] == message
    # The next message starts afresh.
    assert reassembly.feed(b'{"type":"welcome"}') == b'{"type":"welcome"}'


def test_pieces_past_the_bound_are_refused_and_forgotten() -> None:
    reassembly = Reassembly()
    piece = b"+" + b"x" * (1024 * 1024)
    with pytest.raises(SnapshotError, match="larger than"):
        for _ in range(MAX_MESSAGE_BYTES // (1024 * 1024) + 1):
            reassembly.feed(piece)
    assert reassembly.feed(b".{}") == b"{}"
