"""Memory stays flat while a large body streams through a proxy process, both ways, each time
toward a side that reads slower than the other side writes; and through an upgraded tunnel.

Download: a fast upstream, a client reading at SLOW_RATE. Upload: a fast client, an upstream
reading at SLOW_RATE. Tunnel: both at once after a 101. Only backpressure (client write buffer
high -> pause upstream reads; upstream write buffer high -> pause client reads, resume at half)
keeps the proxy from holding the difference, which after a second is hundreds of megabytes.
The proxy runs as its own process (`python -m gossamer.proxy.runner`) so its resident memory
can be read from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from gossamer.snapshot import dump

from .harness import cluster, snapshot, to

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads the proxy's memory from /proc"
)

MB = 1 << 20
SIZE = 1024 * MB
# Each way at once. A quarter of SIZE proves the same bound (buffers are 64 KB; without
# backpressure the proxy grows by hundreds of MB) in under two seconds.
TUNNEL_SIZE = 256 * MB
# The slow side takes this many bytes a second; the fast side can do several times that.
SLOW_RATE = 160 * MB
GROWTH_LIMIT = 20 * MB
CHUNK = 256 * 1024
BLOCK = memoryview(bytes(range(256)) * (CHUNK // 256))
TRANSFER_DEADLINE = 120.0
START_DEADLINE = 10.0


class SlowReading:
    """Paces a protocol's reading to `rate` bytes a second by pausing its transport."""

    def __init__(self, transport: asyncio.Transport, rate: float) -> None:
        self.transport = transport
        self.rate = rate
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()
        self.received = 0

    def count(self, size: int) -> None:
        self.received += size
        ahead = self.started + self.received / self.rate - self.loop.time()
        if ahead > 0.002:
            self.transport.pause_reading()
            self.loop.call_later(ahead, self._resume)

    def _resume(self) -> None:
        if not self.transport.is_closing():
            self.transport.resume_reading()


class FastWriting:
    """Writes `total` bytes as fast as the transport takes them; counts the times it was held."""

    def __init__(self, transport: asyncio.Transport, total: int) -> None:
        self.transport = transport
        self.left = total
        self.held = 0
        self.paused = False

    def pump(self) -> None:
        while self.left and not self.paused and not self.transport.is_closing():
            piece = BLOCK[: min(self.left, CHUNK)]
            self.left -= len(piece)
            self.transport.write(piece)

    def pause(self) -> None:
        self.paused = True
        self.held += 1

    def resume(self) -> None:
        self.paused = False
        self.pump()


class HeadReader:
    """Collects a message head; what follows it is body."""

    def __init__(self) -> None:
        self.buffer = b""
        self.head: bytes | None = None

    def feed(self, data: bytes) -> bytes:
        """Returns the body bytes in `data` once the head is complete."""
        if self.head is not None:
            return data
        self.buffer += data
        head, found, rest = self.buffer.partition(b"\r\n\r\n")
        if not found:
            return b""
        self.head, self.buffer = head, b""
        return rest

    def content_length(self) -> int:
        assert self.head is not None
        for line in self.head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                return int(value)
        return 0


@dataclass
class Upstream:
    """GET /download/N answers N bytes fast; POST /upload reads its body at SLOW_RATE;
    GET /tunnel/N answers 101, then sends N bytes fast and reads N bytes at SLOW_RATE."""

    download_held: list[int] = field(default_factory=list)
    uploaded: list[int] = field(default_factory=list)
    tunnelled: list[int] = field(default_factory=list)


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.head = HeadReader()
        self.writer: FastWriting | None = None
        self.reading: SlowReading | None = None
        self.expected = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        body = self.head.feed(data)
        if self.head.head is None:
            return
        if self.head.head.startswith(b"GET /download/"):
            if self.writer is None:
                self._download(self._size())
            return
        if self.head.head.startswith(b"GET /tunnel/"):
            self._tunnel(body)
            return
        if self.reading is None:
            self.reading = SlowReading(self.transport, SLOW_RATE)
            self.expected = self.head.content_length()
        self.reading.count(len(body))
        if self.reading.received == self.expected:
            self.upstream.uploaded.append(self.reading.received)
            answer = b"%d" % self.reading.received
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(answer))
            self.transport.write(answer)
            self._next()

    def _size(self) -> int:
        assert self.head.head is not None
        return int(self.head.head.split(b" ")[1].rsplit(b"/", 1)[1])

    def _tunnel(self, data: bytes) -> None:
        if self.reading is None:
            self.expected = self._size()
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: bytes\r\nConnection: upgrade\r\n\r\n"
            )
            self.reading = SlowReading(self.transport, SLOW_RATE)
            self.writer = FastWriting(self.transport, self.expected)
            self.writer.pump()
        self.reading.count(len(data))
        if self.reading.received == self.expected:
            self.upstream.tunnelled.append(self.expected)

    def _download(self, size: int) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        self.writer = FastWriting(self.transport, size)
        self.writer.pump()
        self._check_done()

    def _check_done(self) -> None:
        writer = self.writer
        if writer is not None and not writer.left and self.reading is None:
            self.upstream.download_held.append(writer.held)
            self._next()

    def _next(self) -> None:
        self.head = HeadReader()
        self.writer = None
        self.reading = None

    def pause_writing(self) -> None:
        if self.writer is not None:
            self.writer.pause()

    def resume_writing(self) -> None:
        if self.writer is not None:
            self.writer.resume()
            self._check_done()


class ClientProtocol(asyncio.Protocol):
    """Sends one request (its body fast, if any) and reads the answer at `rate`: its
    content-length, or `expect` bytes after the head (a 101's tunnel)."""

    def __init__(
        self, request: bytes, body_size: int, rate: float | None, expect: int | None = None
    ) -> None:
        self.request = request
        self.body_size = body_size
        self.rate = rate
        self.expect = expect
        self.head = HeadReader()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.body = b""
        self.received = 0
        self.writer: FastWriting | None = None
        self.reading: SlowReading | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        transport.write(self.request)
        self.writer = FastWriting(transport, self.body_size)
        self.writer.pump()

    def data_received(self, data: bytes) -> None:
        body = self.head.feed(data)
        if self.head.head is None:
            return
        if self.reading is None and self.rate is not None:
            self.reading = SlowReading(self.transport, self.rate)
        self.received += len(body)
        if len(self.body) < 64:
            self.body += body[:64]
        if self.reading is not None:
            self.reading.count(len(body))
        expect = self.head.content_length() if self.expect is None else self.expect
        if self.received == expect and not self.done.done():
            self.done.set_result(None)

    def pause_writing(self) -> None:
        assert self.writer is not None
        self.writer.pause()

    def resume_writing(self) -> None:
        assert self.writer is not None
        self.writer.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"closed after {self.received} bytes"))


class Memory:
    """The proxy process's resident memory: sampled while it works, and its peak since a reset."""

    def __init__(self, pid: int) -> None:
        self.status = Path(f"/proc/{pid}/status")
        self.clear_refs = Path(f"/proc/{pid}/clear_refs")
        self.peak_sampled = 0

    def read(self, field_name: str) -> int:
        for line in self.status.read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field_name} in {self.status}")

    def reset_peak(self) -> bool:
        """Set VmHWM back to the current VmRSS (Linux >= 4.0); False when not allowed."""
        try:
            self.clear_refs.write_text("5")
        except OSError:
            return False
        return True

    async def sample(self) -> None:
        while True:
            self.peak_sampled = max(self.peak_sampled, self.read("VmRSS"))
            await asyncio.sleep(0.02)


@dataclass
class ProxyProcess:
    process: asyncio.subprocess.Process
    port: int


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, int]]:
    state = Upstream()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: UpstreamProtocol(state), "127.0.0.1", 0)
    yield state, int(server.sockets[0].getsockname()[1])
    server.close()


@pytest.fixture
async def proxy_process(
    upstream: tuple[Upstream, int], tmp_path: Path
) -> AsyncIterator[ProxyProcess]:
    bootstrap = tmp_path / "bootstrap.json"
    bootstrap.write_bytes(dump(snapshot([to("big")], [cluster("big", upstream[1])])))
    ready = tmp_path / "ready"
    stderr = (tmp_path / "stderr").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gossamer.proxy.runner", "--bootstrap", str(bootstrap),
        "--admin", "127.0.0.1:0", "--ready-file", str(ready), stderr=stderr,
    )  # fmt: skip
    try:
        port = await _ready_port(process, ready, tmp_path / "stderr")
        yield ProxyProcess(process, port)
    finally:
        if process.returncode is None:
            process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 10.0)
        if process.returncode is None:
            process.kill()
            await process.wait()
        stderr.close()


async def _ready_port(process: asyncio.subprocess.Process, ready: Path, stderr: Path) -> int:
    deadline = time.monotonic() + START_DEADLINE
    while not (ready.exists() and "admin" in ready.read_text()):
        assert process.returncode is None, stderr.read_text()
        assert time.monotonic() < deadline, "proxy process not ready in time"
        await asyncio.sleep(0.02)
    ports = dict(line.split() for line in ready.read_text().splitlines())
    return int(ports["outbound"])


async def transfer(
    port: int, request: bytes, body_size: int, rate: float | None, expect: int | None = None
) -> ClientProtocol:
    """One request on a new connection, answered in full."""
    loop = asyncio.get_running_loop()
    client = ClientProtocol(request, body_size, rate, expect)
    transport, _ = await loop.create_connection(lambda: client, "127.0.0.1", port)
    try:
        await asyncio.wait_for(client.done, TRANSFER_DEADLINE)
    finally:
        transport.close()
    return client


def download(size: int) -> bytes:
    return b"GET /download/%d HTTP/1.1\r\nHost: big\r\n\r\n" % size


def upload(size: int) -> bytes:
    return b"POST /upload HTTP/1.1\r\nHost: big\r\ncontent-length: %d\r\n\r\n" % size


@contextlib.asynccontextmanager
async def measured(process: ProxyProcess) -> AsyncIterator[Callable[[], int]]:
    """Within the block, watch the proxy's RSS; the callable gives its growth over the start."""
    memory = Memory(process.process.pid)
    baseline = memory.read("VmRSS")
    peak_reset = memory.reset_peak()
    sampler = asyncio.get_running_loop().create_task(memory.sample())
    try:
        yield lambda: max(memory.peak_sampled, memory.read("VmHWM") if peak_reset else 0) - baseline
    finally:
        sampler.cancel()


async def test_memory_stays_flat_streaming_a_large_body_both_ways(
    upstream: tuple[Upstream, int], proxy_process: ProxyProcess
) -> None:
    state, _ = upstream
    port = proxy_process.port
    # Warm up both paths, so what follows measures streaming, not first-use allocations.
    await transfer(port, download(16 * MB), 0, None)
    assert (await transfer(port, upload(16 * MB), 16 * MB, None)).body == b"%d" % (16 * MB)
    async with measured(proxy_process) as growth:
        started = time.monotonic()
        downloader = await transfer(port, download(SIZE), 0, SLOW_RATE)
        uploader = await transfer(port, upload(SIZE), SIZE, None)
        elapsed = time.monotonic() - started
    assert downloader.received == SIZE
    assert uploader.body == b"%d" % SIZE
    # The slow side really was slower: the proxy pushed back on the fast one, each way.
    assert state.download_held[-1] > 0
    assert uploader.writer is not None and uploader.writer.held > 0
    grown = growth()
    print(f"{SIZE // MB} MB each way in {elapsed:.1f}s; RSS +{grown / MB:.1f} MB")
    assert grown < GROWTH_LIMIT, f"proxy RSS grew {grown / MB:.1f} MB"


async def test_memory_stays_flat_through_a_busy_tunnel(
    upstream: tuple[Upstream, int], proxy_process: ProxyProcess
) -> None:
    state, _ = upstream
    port = proxy_process.port
    warm = 16 * MB
    await transfer(port, tunnel(warm), warm, SLOW_RATE, expect=warm)
    async with measured(proxy_process) as growth:
        started = time.monotonic()
        client = await transfer(port, tunnel(TUNNEL_SIZE), TUNNEL_SIZE, SLOW_RATE, TUNNEL_SIZE)
        elapsed = time.monotonic() - started
    assert client.head.head is not None and client.head.head.startswith(b"HTTP/1.1 101 ")
    assert client.received == TUNNEL_SIZE
    assert client.writer is not None and client.writer.held > 0
    await _until(lambda: state.tunnelled[-1:] == [TUNNEL_SIZE])
    grown = growth()
    print(f"{TUNNEL_SIZE // MB} MB each way at once in {elapsed:.1f}s; RSS +{grown / MB:.1f} MB")
    assert grown < GROWTH_LIMIT, f"proxy RSS grew {grown / MB:.1f} MB"


def tunnel(size: int) -> bytes:
    return (
        b"GET /tunnel/%d HTTP/1.1\r\nHost: big\r\nUpgrade: bytes\r\nConnection: upgrade\r\n\r\n"
        % size
    )


async def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TRANSFER_DEADLINE
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
