"""The connection pool's decisions, sans-IO: who gets a connection, who waits, what closes."""

from __future__ import annotations

from typing import Any

from gossamer.proxy.cluster import ClusterState, EndpointState
from gossamer.proxy.upstream import UpstreamConnection
from gossamer.snapshot import Cluster, Endpoint, PoolLimits


class ClosingTransport:
    """The part of a socket transport the pool touches: closing it ends the connection at once
    (a real transport calls `connection_lost` on the next loop iteration)."""

    def __init__(self, protocol: UpstreamConnection) -> None:
        self.protocol = protocol
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.protocol.connection_lost(None)


def connect(cluster: ClusterState, endpoint: EndpointState) -> UpstreamConnection:
    """A real upstream connection of `cluster`, over a transport that only closes."""
    connection = UpstreamConnection(cluster, endpoint, high_water=65536)
    connection.connection_made(ClosingTransport(connection))  # type: ignore[arg-type]
    return connection


class Request:
    """One exchange's side of `acquire`: what it was given, or why it failed."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.connection: Any = None
        self.failure: str | None = None

    def deliver(self, connection: Any) -> None:
        self.connection = connection

    def fail(self, flag: str, reason: str) -> None:
        self.failure = reason


class Pool:
    """A cluster and the connection attempts it asked for, completed by the test."""

    def __init__(self, config: Cluster, previous: ClusterState | None = None) -> None:
        self.cluster = ClusterState(config, previous)
        self.connecting: list[EndpointState] = []

    def request(self, index: int = 0) -> Request:
        request = Request(self)
        endpoint = self.cluster.endpoints[index]
        now = self.cluster.acquire(endpoint, request.deliver, request.fail, self.connecting.append)
        if now is not None:
            request.connection = now
        return request

    def complete(self) -> UpstreamConnection:
        """The oldest connection attempt succeeds."""
        endpoint = self.connecting.pop(0)
        connection = connect(self.cluster, endpoint)
        self.cluster.connected(connection)
        return connection


def config(*ports: int, **limits: Any) -> Cluster:
    endpoints = tuple(Endpoint("127.0.0.1", port) for port in ports)
    return Cluster(name="c", endpoints=endpoints, limits=PoolLimits(**limits))


def test_a_released_connection_is_reused() -> None:
    pool = Pool(config(1))
    first = pool.request()
    connection = pool.complete()
    assert first.connection is connection
    pool.cluster.release(connection)
    assert pool.request().connection is connection
    assert pool.connecting == []


def test_a_queued_request_gets_a_new_connection_when_one_closes() -> None:
    pool = Pool(config(1, max_connections=1))
    first = pool.request()
    connection = pool.complete()
    second = pool.request()
    assert first.connection is connection and second.connection is None
    # max_requests_per_connection, or the upstream said "connection: close".
    connection.close()
    assert len(pool.connecting) == 1
    replacement = pool.complete()
    assert second.connection is replacement


def test_a_failed_connect_frees_its_slot_for_a_queued_request() -> None:
    pool = Pool(config(1, max_connections=1))
    first = pool.request()
    second = pool.request()
    assert len(pool.connecting) == 1
    pool.connecting.pop()
    pool.cluster.connect_failed(pool.cluster.endpoints[0], "UF", "upstream connect refused")
    assert first.failure == "upstream connect refused"
    assert len(pool.connecting) == 1
    replacement = pool.complete()
    assert second.connection is replacement


def test_a_request_waiting_for_its_connection_gets_it_after_a_snapshot_swap() -> None:
    pool = Pool(config(1))
    waiting = pool.request()
    successor = ClusterState(config(1), pool.cluster)
    pool.cluster.retire(successor)
    connection = pool.complete()
    assert waiting.connection is connection


def test_a_connection_released_after_a_swap_serves_the_new_cluster() -> None:
    pool = Pool(config(1, max_connections=1))
    busy = pool.request()
    connection = pool.complete()
    new = Pool(config(1, max_connections=1), pool.cluster)
    pool.cluster.retire(new.cluster)
    queued = new.request()
    assert queued.connection is None and new.connecting == []
    pool.cluster.release(busy.connection)
    assert queued.connection is connection
    assert connection.cluster is new.cluster


def test_connections_to_endpoints_a_snapshot_removes_are_closed() -> None:
    pool = Pool(config(1, 2))
    to_gone, to_kept = pool.request(0), pool.request(1)
    gone, kept = pool.complete(), pool.complete()
    in_use = pool.request(0)
    busy = pool.complete()
    for request in (to_gone, to_kept):
        pool.cluster.release(request.connection)
    successor = ClusterState(config(2), pool.cluster)
    pool.cluster.retire(successor)
    assert gone.is_closed and not kept.is_closed
    assert successor.endpoints[0].idle == [kept]
    pool.cluster.release(in_use.connection)
    assert busy.is_closed
    assert pool.cluster.counters.connections == 1


def test_a_removed_cluster_closes_its_connections() -> None:
    pool = Pool(config(1))
    request = pool.request()
    connection = pool.complete()
    pool.cluster.retire(None)
    pool.cluster.release(request.connection)
    assert connection.is_closed
    assert pool.cluster.counters.connections == 0
