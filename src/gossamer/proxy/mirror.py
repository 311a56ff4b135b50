"""Traffic mirroring: fire-and-forget copies of a route's requests to shadow clusters.

A copy leaves once its request is complete: the head as sent upstream, with Host renamed
`<host>-shadow` as Envoy does, and the body, which the exchange already buffers for retries up to
max_request_body_buffer (a longer body is not mirrored). The shadow's answer is read and dropped.
Nothing a shadow does reaches the client: a copy takes an idle pooled connection or opens its
own, never queues behind real requests, ends at the route's timeout, and does not count towards
outlier detection.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

from gossamer.proxy.cluster import ClusterState, EndpointState, open_connection
from gossamer.proxy.headers import last_chunk
from gossamer.proxy.upstream import ResponseSink, UpstreamConnection

if TYPE_CHECKING:
    from gossamer.proxy.exchange import Exchange
    from gossamer.proxy.stats import ProxyStats
    from gossamer.proxy.timers import Timeout, TimerWheel

# How long a copy may take when its route sets no timeout.
DEFAULT_MIRROR_TIMEOUT = 10.0


def send_copies(exchange: Exchange, trailers: list[tuple[bytes, bytes]] | None) -> None:
    """Copy the exchange's complete request to each mirror whose percentage picks it.

    `trailers` ends a chunked body that does not hold its last chunk yet; None when the body
    is already complete.
    """
    route = exchange.route
    assert route is not None
    runtime = exchange.runtime
    for mirror in route.route.mirrors:
        if random.random() * 100 >= mirror.percent:
            continue
        cluster = runtime.clusters.get(mirror.cluster)
        if cluster is None:
            continue
        if not exchange.replay.replayable():
            _count(runtime.stats, cluster, "body_too_large")
            continue
        data = [shadow_head(exchange.head_bytes), *exchange.replay.chunks]
        if trailers is not None and exchange.head.chunked:
            data.append(last_chunk(trailers))
        copy = MirroredRequest(cluster, data, exchange.is_head, runtime.stats)
        copy.start(
            runtime.timers,
            route.route.timeout or DEFAULT_MIRROR_TIMEOUT,
            runtime.limits.max_request_body_buffer,
        )


def shadow_head(head: bytes) -> bytes:
    """A request head with its Host renamed for the shadow (`a.b:80` -> `a.b-shadow:80`)."""
    start = head.find(b"\r\nhost: ")
    if start < 0:
        return head
    start += len(b"\r\nhost: ")
    end = head.index(b"\r\n", start)
    return head[:start] + shadow_host(head[start:end]) + head[end:]


def shadow_host(host: bytes) -> bytes:
    """`-shadow` after the host name, before any port."""
    colon = host.rfind(b":")
    if colon > host.rfind(b"]") and host[colon + 1 :].isdigit():
        return host[:colon] + b"-shadow" + host[colon:]
    return host + b"-shadow"


class MirroredRequest(ResponseSink):
    """One copy in flight: sends the request and reads the answer only to drop it."""

    __slots__ = (
        "cluster",
        "connecting",
        "data",
        "endpoint",
        "finished",
        "head_only",
        "stats",
        "timer",
        "upstream",
    )

    def __init__(
        self, cluster: ClusterState, data: list[bytes], head_only: bool, stats: ProxyStats
    ) -> None:
        self.cluster = cluster
        self.data = data
        self.head_only = head_only
        self.stats = stats
        self.endpoint: EndpointState | None = None
        self.upstream: UpstreamConnection | None = None
        self.connecting: asyncio.Task[UpstreamConnection] | None = None
        self.timer: Timeout | None = None
        self.finished = False

    def start(self, timers: TimerWheel, timeout: float, high_water: int) -> None:
        """Send the copy on an idle connection or a new one, unless the cluster is full."""
        cluster = self.cluster
        endpoint = cluster.pick()
        if endpoint is None or cluster.counters.active_requests >= cluster.limits.max_requests:
            _count(self.stats, cluster, "overflow")
            self.finished = True
            return
        self.endpoint = endpoint
        cluster.counters.active_requests += 1
        endpoint.active += 1
        self.timer = timers.call_later(timeout, self._on_timeout)
        while endpoint.idle:
            connection = endpoint.idle.pop()
            if connection.usable():
                self._send(connection)
                return
        if not cluster.take_slot(endpoint):
            self._end("overflow")
            return
        loop = asyncio.get_running_loop()
        task = loop.create_task(
            open_connection(
                loop,
                lambda: UpstreamConnection(cluster, endpoint, high_water),
                endpoint,
                cluster.limits.connect_timeout,
                cluster.mesh_tls,
            )
        )
        task.add_done_callback(self._connected)
        self.connecting = task

    def _connected(self, done: asyncio.Task[UpstreamConnection]) -> None:
        self.connecting = None
        endpoint = self.endpoint
        assert endpoint is not None
        if done.cancelled() or done.exception() is not None:
            self.cluster.free_slot(endpoint)
            self._end("connect_failed")
        elif self.finished:
            self.cluster.release(done.result())
        else:
            self._send(done.result())

    def _send(self, connection: UpstreamConnection) -> None:
        self.upstream = connection
        connection.start(self, self.data, self.head_only)
        self.data = []

    # ResponseSink: what the upstream connection tells a copy

    def on_response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        """Dropped."""

    def on_response_body(self, data: bytes) -> None:
        """Dropped."""

    def on_response_end(self, trailers: list[tuple[bytes, bytes]], keep_alive: bool) -> None:
        """The shadow answered; its connection is back in the pool."""
        self.upstream = None
        self._end("answered")

    def on_upstream_lost(self, reason: str) -> None:
        """The shadow failed; no one but the metrics hears of it."""
        self.upstream = None
        self._end("failed")

    def on_upstream_pause(self) -> None:
        """The whole copy is written already: nothing to pause."""

    def on_upstream_resume(self) -> None:
        """Nothing was paused."""

    def on_switched(self, connection: UpstreamConnection, rest: bytes) -> None:
        """A shadow that switches protocols gets no tunnel: close it."""
        del rest
        self.upstream = None
        connection.close()
        self._end("failed")

    def _on_timeout(self) -> None:
        self.timer = None
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.detach()
        self._end("timeout")

    def _end(self, result: str) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        endpoint = self.endpoint
        assert endpoint is not None
        endpoint.active -= 1
        self.cluster.counters.active_requests -= 1
        _count(self.stats, self.cluster, result)


def _count(stats: ProxyStats, cluster: ClusterState, result: str) -> None:
    stats.incr(f'gossamer_mirror_requests_total{{cluster="{cluster.name}",result="{result}"}}')
