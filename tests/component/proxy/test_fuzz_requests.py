"""Fuzzing the request path: whatever bytes a client sends, in whatever pieces, the proxy answers
or closes, nothing escapes the event loop, no request is left counted, and it serves on.

Inputs are valid-ish requests (random methods, targets, headers, bodies and chunking, often
pipelined), some with random byte mutations, written in random pieces to a proxy in front of a
real backend. One proxy serves every example, so damage one example does shows in the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import string
from collections.abc import Iterator

import httptools
import pytest
import uvloop
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gossamer.proxy import Proxy
from gossamer.snapshot import DirectResponse, Route, RouteMatch, StringMatch

from .backend import Backend
from .harness import Running, cluster, snapshot, start_proxy, to
from .waiting import LoopErrors, eventually

# Ends a well-formed sequence: the proxy answers it and closes.
SENTINEL = b"GET /fuzz-end HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n"
# How long an input that left a request incomplete may keep the connection before the client
# half-closes; only how far the input is exercised depends on it, never the verdict.
PATIENCE = 0.3
# After the client's end of input, the proxy must close within this.
CLOSE_DEADLINE = 5.0

TOKEN = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
PATH = string.ascii_letters + string.digits + "-._~/?=&%:@!$'()*+,;"
VISIBLE = "".join(c for c in string.printable if c not in "\r\n\x0b\x0c")
# Headers that steer framing, routing or hop-by-hop handling, and values that tempt them.
NAMES = [
    b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect", b"Upgrade",
    b"TE", b"Trailer", b"Keep-Alive", b"Proxy-Connection", b"X-Forwarded-For",
    b"X-Forwarded-Proto", b"X-Request-Id", b"traceparent", b"x-b3-traceid", b"x-b3-spanid",
    b"Cookie", b"x-chunked", b"x-close",
]  # fmt: skip
VALUES = [
    b"chunked", b"close", b"keep-alive", b"upgrade", b"Upgrade, close", b"websocket",
    b"100-continue", b"0", b"5", b"-1", b"1, 1", b"99999999999999999999", b"gzip, chunked",
    b"trailers", b"a", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
]  # fmt: skip


# Names that leave a request's framing and host alone; those go in by the framing drawn.
SAFE_NAMES = [n for n in NAMES if n not in (b"Host", b"Content-Length", b"Transfer-Encoding")]


class Fields:
    """Strategies for each part of a request: tame ones, and wild ones that add breakage."""

    def __init__(self, wild: bool) -> None:
        self.methods = st.sampled_from(
            [b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH"]
        )
        self.targets = st.one_of(
            st.text(PATH, max_size=40).map(lambda path: b"/" + path.encode()),
            st.sampled_from([b"/local", b"http://reviews:9080/r/1?x=1", b"http://h"]),
        )
        self.versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"])
        self.names = st.one_of(
            st.text(TOKEN, min_size=1, max_size=12).map(lambda name: b"x-" + name.encode()),
            st.sampled_from(SAFE_NAMES),
        )
        self.values = st.one_of(
            st.text(VISIBLE, max_size=30).map(lambda value: value.strip().encode()),
            st.sampled_from(VALUES),
        )
        if wild:
            self.methods = st.one_of(
                self.methods,
                st.sampled_from([b"TRACE", b"CONNECT"]),
                st.text(TOKEN, min_size=1, max_size=8).map(str.encode),
                st.binary(min_size=1, max_size=6),
            )
            self.targets = st.one_of(
                self.targets, st.sampled_from([b"*", b"//x", b"/%zz"]), st.binary(max_size=16)
            )
            self.versions = st.one_of(
                self.versions, st.sampled_from([b"HTTP/2.0", b"HTTP/1.2", b"http/1.1", b"HTTP/1"])
            )
            self.names = st.one_of(
                self.names, st.sampled_from(NAMES), st.binary(min_size=1, max_size=8)
            )
            self.values = st.one_of(self.values, st.binary(max_size=24))


TAME, WILD = Fields(wild=False), Fields(wild=True)


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True about once in `n` draws."""
    # Not 0, nor a bound: hypothesis draws those far more often than one in n.
    return st.integers(0, n - 1).map(lambda drawn: drawn == n // 2)


@st.composite
def chunked(draw: st.DrawFn, body: bytes, fields: Fields) -> bytes:
    """`body` in chunks of random sizes, a last chunk, and maybe trailers."""
    out = b""
    while body:
        size = draw(st.integers(1, max(1, len(body))))
        extension = draw(st.sampled_from([b"", b";name=value"]))
        out += b"%x%b\r\n%b\r\n" % (size, extension, body[:size])
        body = body[size:]
    trailers = draw(st.lists(st.tuples(fields.names, fields.values), max_size=2))
    return out + b"0\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in trailers) + b"\r\n"


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """One request, framed as its headers say; about one in ten has wild parts."""
    fields = WILD if draw(one_in(10)) else TAME
    headers = draw(st.lists(st.tuples(fields.names, fields.values), max_size=6))
    if not draw(one_in(20)):
        headers.insert(0, (b"Host", draw(st.sampled_from([b"a", b"reviews:9080", b"x.y"]))))
    body = draw(st.binary(max_size=200))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    if framing == "length":
        # Now and then a client that stops sending midway through its body.
        short = draw(st.integers(1, 1000)) if draw(one_in(10)) else 0
        headers.append((b"Content-Length", str(len(body) + short).encode()))
    elif framing == "chunked":
        headers.append((b"Transfer-Encoding", b"chunked"))
        body = draw(chunked(body, fields))
    else:
        body = b""
    line = draw(fields.methods) + b" " + draw(fields.targets) + b" " + draw(fields.versions)
    head = b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    return line + b"\r\n" + head + b"\r\n" + body


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with a few bytes flipped, inserted, deleted or replaced by delimiters."""
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "delimiter"]))
        if kind == "flip" and at < len(data):
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
        elif kind == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 8)) :]
        else:
            special = draw(st.sampled_from([b"\r", b"\n", b"\r\n", b"\x00", b":", b" ", b"\t"]))
            data = data[:at] + special + data[at + 1 :]
    return data


@st.composite
def inputs(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """Pipelined requests, maybe mutated, and the sizes of the writes that carry them."""
    data = b"".join(draw(st.lists(requests(), min_size=1, max_size=3)))
    if draw(one_in(4)):
        data = draw(mutations(data))
    return data, draw(st.lists(st.integers(1, 80), max_size=8))


class Rig:
    """A proxy in front of a backend on a loop of its own, shared by the examples.

    After an example fails, `restart` gives the next a fresh proxy, so that shrinking finds
    the input that did the damage rather than any input run after it.
    """

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.errors = LoopErrors().install(self.loop)
        self.backend, self.running = self.loop.run_until_complete(self._start())

    def __repr__(self) -> str:
        return f"<Rig proxy on port {self.running.port}>"

    def restart(self) -> None:
        self.loop.run_until_complete(self._stop())
        self.errors.seen.clear()
        self.backend, self.running = self.loop.run_until_complete(self._start())

    def close(self) -> None:
        self.loop.run_until_complete(self._stop())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    async def _start(self) -> tuple[Backend, Running]:
        backend = await Backend("fuzz").start()
        routes = [
            Route(
                name="local",
                match=RouteMatch(path=StringMatch(kind="exact", value="/local")),
                direct_response=DirectResponse(status=200, body="here"),
            ),
            to("one"),
        ]
        return backend, await start_proxy(snapshot(routes, [cluster("one", backend.port)]))

    async def _stop(self) -> None:
        await self.running.admin.close()
        await self.running.proxy.close()
        await self.backend.stop()

    @property
    def proxy(self) -> Proxy:
        return self.running.proxy

    def run(self, data: bytes, writes: list[int]) -> bytes:
        return self.loop.run_until_complete(self._probe(data, writes))

    def check_still_serving(self) -> None:
        self.loop.run_until_complete(self._still_serving())

    async def _probe(self, data: bytes, writes: list[int]) -> bytes:
        self.backend.requests.clear()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.running.port)
        try:
            for size in [*writes, len(data)]:
                piece, data = data[:size], data[size:]
                writer.write(piece)
                await writer.drain()
            writer.write(SENTINEL)
            await writer.drain()
        except ConnectionError:
            pass  # The proxy closed on us mid-input: allowed.
        received = await self._read_until_closed(reader, writer)
        writer.close()
        proxy = self.proxy
        # Cleaning up after a closed connection takes a few loop turns, not seconds.
        await eventually(lambda: proxy.active_requests == 0, timeout=1, what="requests counted out")
        connections = proxy.listeners["outbound"].connections
        await eventually(lambda: not connections, timeout=1, what="connection forgotten")
        await eventually(lambda: upstreams_idle(proxy), timeout=1, what="upstreams idle")
        return received

    async def _read_until_closed(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes:
        try:
            return await asyncio.wait_for(reader.read(), PATIENCE)
        except TimeoutError:
            pass
        except ConnectionError:
            return b""
        # Still open: the input left a request incomplete. Ending ours must end the proxy's.
        event("input left a request incomplete")
        if not writer.is_closing():
            with contextlib.suppress(ConnectionError, OSError):
                writer.write_eof()
        try:
            return await asyncio.wait_for(reader.read(), CLOSE_DEADLINE)
        except ConnectionError:
            return b""
        except TimeoutError:
            raise AssertionError("the proxy kept the connection after the client ended") from None

    async def _still_serving(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.running.port)
        writer.write(b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), CLOSE_DEADLINE)
        writer.close()
        assert raw.startswith(b"HTTP/1.1 200 "), raw[:200]


@pytest.fixture
def rig() -> Iterator[Rig]:
    built = Rig()
    yield built
    built.close()


def upstreams_idle(proxy: Proxy) -> bool:
    """Every upstream connection left open is idle in its pool, none held by a finished request."""
    return all(
        cluster.counters.connections == sum(len(e.idle) for e in cluster.endpoints)
        for cluster in proxy.clusters.values()
    )


def parses_as_responses(raw: bytes) -> None:
    """Complete, well-formed responses, nothing else (responses to HEAD are not checked)."""
    parser = httptools.HttpResponseParser(_Ignore())
    parser.feed_data(raw)


class _Ignore:
    """A parser callback sink that keeps nothing."""


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=inputs())
def test_any_input_is_answered_or_closed_and_nothing_escapes(
    rig: Rig, case: tuple[bytes, list[int]]
) -> None:
    data, writes = case
    try:
        raw = rig.run(data, writes)
        event(f"first answer: {raw[:12].decode('latin-1') or 'none'}")
        assert rig.errors.seen == []
        assert rig.proxy.stats.counters.get("gossamer_internal_errors_total", 0) == 0
        assert b"x-gossamer-reason: internal proxy error" not in raw
        if b"HEAD" not in data:
            parses_as_responses(raw)
        rig.check_still_serving()
    except BaseException:
        rig.restart()
        raise
