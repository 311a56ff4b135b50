"""One try of a request upstream (Envoy's upstream request): its endpoint, its connection, its
per-try timer, and its end, reported to the cluster for the endpoint that actually served it."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

from gossamer.proxy import local_reply as lr
from gossamer.proxy.cluster import ClusterState, EndpointState, open_connection
from gossamer.proxy.mtls import MeshIdentityError
from gossamer.proxy.timers import Timeout, TimerWheel
from gossamer.proxy.upstream import UpstreamConnection

if TYPE_CHECKING:
    from gossamer.proxy.exchange import Exchange


class Attempt:
    """A try: picked an endpoint, waits for a connection, sends, and ends exactly once."""

    __slots__ = (
        "cluster",
        "connection",
        "ended",
        "endpoint",
        "exchange",
        "reused",
        "started",
        "timer",
    )

    def __init__(self, exchange: Exchange, cluster: ClusterState, endpoint: EndpointState) -> None:
        self.exchange = exchange
        self.cluster = cluster
        self.endpoint = endpoint
        self.connection: UpstreamConnection | None = None
        self.timer: Timeout | None = None
        self.started = 0.0
        """When the request was sent (monotonic clock); 0 until then."""
        self.reused = False
        """The connection had served requests before (the upstream may have closed it since)."""
        self.ended = False
        cluster.try_started(endpoint)

    def acquire(self) -> UpstreamConnection | None:
        """An idle connection now, or None: the cluster connects or queues, and calls back."""
        return self.cluster.acquire(self.endpoint, self.deliver, self.connect_failed, self.connect)

    def connect(self, endpoint: EndpointState) -> None:
        """Open a connection to `endpoint` for the cluster's queue (whoever it goes to)."""
        cluster = self.cluster
        loop = asyncio.get_running_loop()
        high = self.exchange.runtime.limits.max_request_body_buffer

        def factory() -> UpstreamConnection:
            return UpstreamConnection(cluster, endpoint, high)

        task = loop.create_task(
            open_connection(
                loop, factory, endpoint, cluster.limits.connect_timeout, cluster.mesh_tls
            )
        )
        task.add_done_callback(lambda done: _connected(cluster, endpoint, done))

    def deliver(self, connection: UpstreamConnection) -> None:
        """The cluster has a connection for this try (perhaps to another endpoint)."""
        if self.ended or self.exchange.finished:
            connection.cluster.release(connection)
            return
        serving = connection.endpoint
        if serving is not self.endpoint:
            self.cluster.try_moved(self.endpoint, serving)
            self.endpoint = serving
        self.reused = connection.served > 0
        self.exchange.send(connection)

    def connect_failed(self, flag: str, reason: str) -> None:
        """No connection could be made for this try."""
        if not self.ended and not self.exchange.finished:
            self.exchange.connect_failed(flag, reason)

    def sending(self, connection: UpstreamConnection, started: float) -> None:
        """The request goes out on `connection`."""
        self.connection = connection
        self.started = started

    def arm(self, timers: TimerWheel, seconds: float, callback: Callable[[], None]) -> None:
        """The per-try timeout."""
        self.timer = timers.call_later(seconds, callback)

    def detach(self) -> None:
        """Give up the connection's answer (the try timed out or was abandoned)."""
        connection = self.connection
        if connection is not None:
            self.connection = None
            connection.detach()

    def end(self, *, record: bool, status: int = 0, gateway_error: bool = False) -> None:
        """The try is over: stop its timer and tell the cluster (see `ClusterState.try_ended`)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.ended:
            return
        self.ended = True
        self.cluster.try_ended(
            self.endpoint, self.started, record=record, status=status, gateway_error=gateway_error
        )


def _connected(
    cluster: ClusterState, endpoint: EndpointState, done: asyncio.Task[UpstreamConnection]
) -> None:
    if done.cancelled():
        cluster.connect_failed(endpoint, lr.UPSTREAM_CONNECT_FAILURE, "upstream connect cancelled")
        return
    error = done.exception()
    if error is None:
        cluster.connected(done.result())
    elif isinstance(error, TimeoutError):
        cluster.connect_failed(endpoint, lr.UPSTREAM_CONNECT_FAILURE, "upstream connect timeout")
    elif isinstance(error, ConnectionRefusedError):
        cluster.connect_failed(endpoint, lr.UPSTREAM_CONNECT_FAILURE, "upstream connect refused")
    elif isinstance(error, MeshIdentityError):
        cluster.connect_failed(endpoint, lr.UPSTREAM_CONNECT_FAILURE, f"upstream mTLS: {error}")
    elif isinstance(error, ssl.SSLError):
        reason = f"upstream mTLS handshake failed: {error.reason or error}"
        cluster.connect_failed(endpoint, lr.UPSTREAM_CONNECT_FAILURE, reason)
    else:
        reason = f"upstream connect error: {error.__class__.__name__}"
        cluster.connect_failed(endpoint, lr.UPSTREAM_CONNECT_FAILURE, reason)
