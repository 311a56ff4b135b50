"""The proxy's own work per request, without sockets: what the hot path costs in Python.

Usage: python bench/hotpath_bench.py [--requests 20000] [--rounds 7] [--profile] [--markdown FILE]
                                     [--tracing PERCENT]

A proxy runs the snapshot of bench/proxy_bench.py (10 routes, 3 clusters, retries and metrics
on). Its downstream and upstream connections get in-memory transports, so a request costs
only what the proxy does: parse the request, route, balance, build the upstream head, parse
the response, build the client's head, record metrics. Two requests are timed, each followed
by a 1 KB response from nginx's usual headers:

- `wrk`: what wrk sends (a request line and Host);
- `client`: six headers, as an HTTP library sends them, on the second route.

The reference, in the same run, is httptools alone parsing the same request and response with
callbacks that do nothing: the floor for any proxy built on it. The table gives the best
round's microseconds per request and the ratio to that floor. With `--tracing PERCENT`, the
proxy traces (new traces sampled at PERCENT) into its usual span buffer (4,096 spans), which a
stand-in exporter empties, a batch of 256 at a time, the moment a batch is full: the request path's
cost of tracing, without the export's. Use it to see a hot-path change
in isolation (the socket benchmarks vary by more than such a change between runs); with
`--profile`, cProfile's top functions follow the table.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httptools
import uvloop

# bench/ is this script's folder, hence on sys.path.
from proxy_bench import gossamer_snapshot

from gossamer.proxy import native
from gossamer.proxy.downstream import DownstreamConnection
from gossamer.proxy.server import Proxy
from gossamer.proxy.upstream import UpstreamConnection
from gossamer.snapshot.codec import decode

REQUESTS = {
    "wrk": b"GET /body1KB HTTP/1.1\r\nHost: 127.0.0.1:18080\r\n\r\n",
    "client": (
        b"GET /api/v1/assets?id=42 HTTP/1.1\r\nHost: assets.default.svc.cluster.local\r\n"
        b"User-Agent: python-httpx/0.27\r\nAccept: application/json\r\n"
        b"Accept-Encoding: gzip\r\nAuthorization: Bearer abc.def.ghi\r\n"
        b"Connection: keep-alive\r\n\r\n"
    ),
}
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 03:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 1024\r\n"
    b"Last-Modified: Thu, 26 Nov 2026 02:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "6a3f-400"\r\nAccept-Ranges: bytes\r\n\r\n' + b"x" * 1024
)


class MemoryTransport:
    """Just enough of a transport: what is written is kept, to be counted."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writelines(self, data: list[bytes]) -> None:
        self.written.extend(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


class NullCallbacks:
    """httptools callbacks that do nothing."""

    def on_url(self, url: bytes) -> None:
        pass

    def on_header(self, name: bytes, value: bytes) -> None:
        pass

    def on_body(self, body: bytes) -> None:
        pass


def best_of(rounds: int, requests: int, one: Callable[[], None]) -> float:
    """Microseconds per request of the fastest round."""
    times = []
    for _ in range(rounds):
        gc.collect()
        started = time.perf_counter()
        for _ in range(requests):
            one()
        times.append((time.perf_counter() - started) / requests * 1e6)
    return min(times)


def traced(config: dict[str, Any], percent: float) -> dict[str, Any]:
    """The snapshot with tracing on, its spans kept for the length of a run."""
    provider = {
        "name": "bench", "format": "zipkin", "url": "http://127.0.0.1:9/api/v2/spans",
        "flush_interval": 3600.0, "max_buffered_spans": 4096, "batch_size": 256,
    }  # fmt: skip
    return {**config, "telemetry": {"tracing": {"sampling": percent, "provider": provider}}}


async def started_proxy(backend_port: int, tracing: float | None) -> Proxy:
    """The benchmark's proxy; with tracing, its span buffer emptied whenever a batch is full."""
    proxy = Proxy()
    config = gossamer_snapshot(0, backend_port)
    if tracing is not None:
        config = traced(config, tracing)
    await proxy.apply(decode(json.dumps(config)))
    if proxy.spans is not None:
        proxy.spans.wake = proxy.spans.spans.clear
    return proxy


async def through_proxy(
    request: bytes, requests: int, rounds: int, profile: bool, tracing: float | None = None
) -> tuple[float, pstats.Stats | None]:
    """Time requests through a real Proxy whose two connections have memory transports."""
    loop = asyncio.get_running_loop()
    backend = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    backend_port = int(backend.sockets[0].getsockname()[1])
    proxy = await started_proxy(backend_port, tracing)
    handle = next(iter(proxy.listeners.values()))
    client = DownstreamConnection(handle)
    to_client = MemoryTransport()
    client.connection_made(to_client)  # type: ignore[arg-type]
    # The first request opens a real upstream connection, whose transport is then swapped.
    client.data_received(request)
    upstream: UpstreamConnection | None = None
    for _ in range(200):
        await asyncio.sleep(0.01)
        exchange = client.current
        attempt = exchange.current if exchange is not None else None
        if attempt is not None and attempt.connection is not None:
            upstream = attempt.connection
            break
    if upstream is None:
        raise RuntimeError("the proxy never connected to the stand-in backend")
    socket_transport = upstream.transport
    to_upstream = MemoryTransport()
    upstream.transport = to_upstream  # type: ignore[assignment]
    upstream.data_received(RESPONSE)
    if client.current is not None or not to_client.written[0].startswith(b"HTTP/1.1 200"):
        raise RuntimeError("the first request was not answered")

    def one() -> None:
        client.data_received(request)
        upstream.data_received(RESPONSE)

    for _ in range(2000):
        one()
    to_client.written.clear()
    to_upstream.written.clear()
    stats = None
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(requests):
            one()
        profiler.disable()
        stats = pstats.Stats(profiler)
    micros = best_of(rounds, requests, one)
    answered = len(to_client.written)
    if answered != len(to_upstream.written) or answered < rounds * requests:
        raise RuntimeError(f"{answered} answers for {rounds * requests} requests")
    upstream.transport = socket_transport
    if proxy.spans is not None:
        proxy.spans.spans.clear()  # not to be sent to the stand-in address as the proxy closes
    await proxy.close()
    backend.close()
    return micros, stats


def parsing_floor(request: bytes, requests: int, rounds: int) -> float:
    """httptools parsing the same request and response, with callbacks that do nothing."""
    callbacks = NullCallbacks()
    request_parser = httptools.HttpRequestParser(callbacks)
    response_parser = httptools.HttpResponseParser(callbacks)

    def one() -> None:
        request_parser.feed_data(request)
        response_parser.feed_data(RESPONSE)

    return best_of(rounds, requests, one)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000, help="per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="cProfile one more round")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--tracing", type=float, metavar="PERCENT", help="trace, sampling this")
    options = parser.parse_args()
    rows = []
    profiles = []
    for name, request in REQUESTS.items():
        floor = parsing_floor(request, options.requests, options.rounds)
        micros, stats = uvloop.run(
            through_proxy(
                request, options.requests, options.rounds, options.profile, options.tracing
            )
        )
        rows.append((name, floor, micros))
        if stats is not None:
            profiles.append((name, stats))
    tracing = "off" if options.tracing is None else f"on, {options.tracing:g} % sampled"
    print(f"Python {sys.version.split()[0]}; hot path {native.describe()}; tracing {tracing}; "
          f"best of {options.rounds} rounds of {options.requests} requests\n")  # fmt: skip
    table = [
        "| request | httptools alone, µs | Gossamer, µs | Gossamer / httptools |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| {name} | {floor:.2f} | {micros:.2f} | {micros / floor:.1f} |"
            for name, floor, micros in rows
        ),
    ]
    print("\n".join(table))
    if options.markdown:
        options.markdown.write_text("\n".join(table) + "\n", encoding="utf-8")
    for name, stats in profiles:
        print(f"\n{name}: top functions by own time (cProfile inflates small calls)")
        stats.sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
