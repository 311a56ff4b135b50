"""Malformed HTTP/2 is refused on its stream or its connection, and every other is served.

Invalid pseudo-headers, connection-specific fields, a content-length the DATA contradicts,
oversized header lists, rapid resets, CONTINUATION floods, HPACK bombs, oversized frames and
random frames: each test checks that another stream or connection is still answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable

import h2.exceptions
import hpack
import pytest
from h2.errors import ErrorCodes

from gossamer.proxy.http2 import PREFACE
from gossamer.snapshot import ListenerLimits, Snapshot

from .backend import Backend
from .h2client import H2Client, frame
from .harness import Running, cluster, snapshot, to
from .waiting import LoopErrors, eventually

Run = Callable[[Snapshot], Awaitable[Running]]


def plain(backend: Backend) -> Snapshot:
    return snapshot([to("one")], [cluster("one", backend.port)])


async def test_malformed_requests_reset_their_stream_only(backend: Backend, run_proxy: Run) -> None:
    proxy = await run_proxy(plain(backend))
    client = await H2Client.connect(proxy.port, validate=False)
    try:
        bad = [
            client.request("/", headers=[(b"connection", b"keep-alive")], end=False),
            client.request("/", headers=[(b"transfer-encoding", b"chunked")], end=False),
            client.request("/", headers=[(b"X-Upper", b"1")], end=False),
            client.request("/", headers=[(b"te", b"gzip")], end=False),
            client.request("/", headers=[(b":status", b"200")], end=False),
            client.request("/", headers=[(b"x-smuggle", b"a\r\nb: c")], end=False),
        ]
        for stream_id in bad:
            answer = await client.answer(stream_id)
            assert answer.status == 400, answer
            assert answer.reset == ErrorCodes.PROTOCOL_ERROR
        good = await client.get("/still")
    finally:
        await client.close()
    assert good.status == 200
    assert [r.target for r in backend.requests] == ["/still"]
    assert client.goaway is None


async def test_oversized_headers_get_431_on_their_stream(backend: Backend, run_proxy: Run) -> None:
    limits = ListenerLimits(max_header_bytes=4096)
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)], limits=limits))
    client = await H2Client.connect(proxy.port)
    try:
        big = await client.get("/", headers=[(b"x-big", b"v" * 5000)])
        good = await client.get("/after")
    finally:
        await client.close()
    assert big.status == 431
    assert good.status == 200


async def test_a_content_length_mismatch_ends_that_connection_only(
    backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(plain(backend))
    other = await H2Client.connect(proxy.port)
    liar = await H2Client.connect(proxy.port, validate=False)
    try:
        stream_id = liar.request(
            "/", method="POST", headers=[(b"content-length", b"10")], body=b"12345"
        )
        await liar.answer(stream_id)
        await asyncio.wait_for(liar.closed.wait(), 10)
        assert liar.goaway == ErrorCodes.PROTOCOL_ERROR
        assert (await other.get("/fine")).status == 200
    finally:
        await liar.close()
        await other.close()


async def test_a_rapid_reset_flood_gets_goaway(backend: Backend, run_proxy: Run) -> None:
    limits = ListenerLimits(http2_max_resets=50)
    config = snapshot([to("one")], [cluster("one", backend.port)], limits=limits)
    proxy = await run_proxy(config)
    other = await H2Client.connect(proxy.port)
    attacker = await H2Client.connect(proxy.port)
    try:
        for _ in range(200):
            stream_id = attacker.request("/", headers=[(b"x-delay", b"1")])
            attacker.reset(stream_id)
            if attacker.closed.is_set():
                break
        await asyncio.wait_for(attacker.closed.wait(), 10)
        assert attacker.goaway == ErrorCodes.ENHANCE_YOUR_CALM
        assert (await other.get("/fine")).status == 200
    finally:
        await attacker.close()
        await other.close()
    assert "\ngossamer_http2_reset_flood_total 1\n" in proxy.proxy.stats.prometheus()
    await eventually(lambda: proxy.proxy.active_requests == 0, what="resets released")


async def test_a_continuation_flood_ends_that_connection(backend: Backend, run_proxy: Run) -> None:
    proxy = await run_proxy(plain(backend))
    other = await H2Client.connect(proxy.port)
    # HEADERS without END_HEADERS, then CONTINUATION frames that never end the block.
    flood = frame(1, 0x1, 1, b"\x82") + frame(9, 0, 1, b"\x00" * 16000) * 200
    await refused_connection(proxy.port, flood)
    assert (await other.get("/fine")).status == 200
    await other.close()
    assert "\ngossamer_http2_protocol_errors_total 1\n" in proxy.proxy.stats.prometheus()


async def test_an_hpack_bomb_ends_that_connection(backend: Backend, run_proxy: Run) -> None:
    limits = ListenerLimits(max_header_bytes=4096)
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)], limits=limits))
    other = await H2Client.connect(proxy.port)
    # One 4,000-byte field into HPACK's dynamic table, then 2,000 one-byte references to it:
    # 8 MB of headers from 6 KB.
    fields = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")]
    block = hpack.Encoder().encode([*fields, (b"x-big", b"v" * 4000)]) + b"\xbe" * 2000
    code = await refused_connection(proxy.port, frame(1, 0x4 | 0x1, 1, block))
    assert code in (None, ErrorCodes.ENHANCE_YOUR_CALM)
    assert (await other.get("/fine")).status == 200
    await other.close()
    assert [r.target for r in backend.requests] == ["/fine"]
    assert "\ngossamer_http2_protocol_errors_total 1\n" in proxy.proxy.stats.prometheus()


async def test_an_oversized_frame_is_refused_as_its_header_arrives(
    backend: Backend, run_proxy: Run
) -> None:
    proxy = await run_proxy(plain(backend))
    # A frame header announcing 16 MiB, and no payload: the proxy must not wait for it.
    code = await refused_connection(proxy.port, b"\xff" * 64)
    assert code in (None, ErrorCodes.FRAME_SIZE_ERROR)
    client = await H2Client.connect(proxy.port)
    try:
        assert (await client.get("/")).status == 200
    finally:
        await client.close()


async def test_streams_beyond_the_limit_are_not_taken(backend: Backend, run_proxy: Run) -> None:
    limits = ListenerLimits(http2_max_concurrent_streams=5)
    proxy = await run_proxy(snapshot([to("one")], [cluster("one", backend.port)], limits=limits))
    client = await H2Client.connect(proxy.port)
    try:
        await eventually(
            lambda: client.conn.remote_settings.max_concurrent_streams == 5, what="settings"
        )
        streams = [client.request("/", headers=[(b"x-delay", b"0.2")]) for _ in range(5)]
        with pytest.raises(h2.exceptions.TooManyStreamsError):
            client.request("/")
        answers = [await client.answer(s) for s in streams]
    finally:
        await client.close()
    assert [a.status for a in answers] == [200] * 5


async def refused_connection(port: int, frames: bytes) -> int | None:
    """Open a connection, send the preface, SETTINGS and `frames`, and wait until the proxy
    closes it; the GOAWAY's error code, if it reached the client before the close did."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = b""
    try:
        writer.write(PREFACE + frame(4, 0, 0, b"") + frames)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        with contextlib.suppress(ConnectionError):
            data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    return goaway_code(data)


async def pinged_or_closed(reader: asyncio.StreamReader) -> None:
    """Read frames until a PING ACK comes or the proxy closes the connection."""
    data = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            data += chunk
            at = 0
            while at + 9 <= len(data):
                if data[at + 3] == 6 and data[at + 4] & 1:
                    return
                at += 9 + int.from_bytes(data[at : at + 3], "big")


def goaway_code(data: bytes) -> int | None:
    """The error code of the first GOAWAY among raw frames, if any."""
    at = 0
    while at + 9 <= len(data):
        length = int.from_bytes(data[at : at + 3], "big")
        if data[at + 3] == 7:
            return int.from_bytes(data[at + 13 : at + 17], "big")
        at += 9 + length
    return None


async def test_random_frames_never_reach_the_event_loop(backend: Backend, run_proxy: Run) -> None:
    errors = LoopErrors().install(asyncio.get_running_loop())
    proxy = await run_proxy(plain(backend))
    rng = random.Random(20)
    valid = hpack.Encoder().encode(
        [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
    )
    for _ in range(150):
        frames = b"".join(
            frame(
                rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x20]),
                rng.randrange(256),
                rng.choice([0, 1, 3, rng.randrange(1 << 31)]),
                rng.choice([valid, b"", rng.randbytes(rng.randrange(40))]),
            )
            for _ in range(rng.randrange(1, 8))
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        # A PING after them: its ACK says the proxy has dealt with everything before it.
        writer.write(PREFACE + frame(4, 0, 0, b"") + frames + frame(6, 0, 0, b"12345678"))
        # Answered, reset or closed: any of them, as long as nothing escapes.
        await asyncio.wait_for(pinged_or_closed(reader), 10)
        writer.close()
    client = await H2Client.connect(proxy.port)
    try:
        assert (await client.get("/after")).status == 200
    finally:
        await client.close()
    assert errors.seen == []
    assert "gossamer_internal_errors_total" not in proxy.proxy.stats.prometheus()
