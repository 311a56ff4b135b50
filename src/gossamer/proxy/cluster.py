"""A cluster at run time: endpoints with their load and health, a balancer, pools and breakers."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from gossamer.proxy.balancer import Balancer, balancer_for
from gossamer.proxy.mtls import MeshIdentityError, MeshTls
from gossamer.security.spiffe import peer_spiffe_id
from gossamer.snapshot import Cluster, Endpoint, PoolLimits

if TYPE_CHECKING:
    from gossamer.proxy.upstream import UpstreamConnection

# Decay of the latency average behind PEAK_EWMA, and the latency assumed before any answer.
EWMA_DECAY_SECONDS = 10.0
EWMA_DEFAULT_SECONDS = 0.001


class EndpointState:
    """One endpoint: its requests in flight, idle connections, latency average and ejection."""

    __slots__ = (
        "active",
        "address",
        "check_failed",
        "connections",
        "consecutive_5xx",
        "consecutive_gateway",
        "ejected_until",
        "ejections",
        "ewma",
        "ewma_stamp",
        "failed_checks",
        "healthy",
        "identity",
        "idle",
        "key",
        "labels",
        "passed_checks",
        "port",
        "weight",
        "zone",
    )

    def __init__(self, endpoint: Endpoint) -> None:
        self.address = endpoint.address
        self.port = endpoint.port
        self.key = (endpoint.address, endpoint.port)
        self.weight = max(1, endpoint.weight)
        self.zone = endpoint.zone
        self.labels = dict(endpoint.labels)
        self.healthy = endpoint.healthy
        self.identity = endpoint.identity
        self.active = 0
        self.connections = 0
        self.idle: list[UpstreamConnection] = []
        self.ewma = EWMA_DEFAULT_SECONDS
        self.ewma_stamp = time.monotonic()
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        self.ejected_until = 0.0
        self.ejections = 0
        # Active health checks: consecutive results, and the verdict they add up to.
        self.failed_checks = 0
        self.passed_checks = 0
        self.check_failed = False

    def cost(self, now: float) -> float:
        """PEAK_EWMA's cost: decayed latency average times the requests it would have."""
        elapsed = max(0.0, now - self.ewma_stamp)
        decayed = self.ewma * math.exp(-elapsed / EWMA_DECAY_SECONDS)
        return decayed * (self.active + 1) / self.weight

    def observe_latency(self, seconds: float, now: float) -> None:
        """Fold one response time into the peak-sensitive average."""
        if seconds > self.ewma:
            self.ewma = seconds
        else:
            elapsed = max(0.0, now - self.ewma_stamp)
            weight = math.exp(-elapsed / EWMA_DECAY_SECONDS)
            self.ewma = self.ewma * weight + seconds * (1 - weight)
        self.ewma_stamp = now

    def __repr__(self) -> str:
        state = "ejected" if self.ejected_until else ("healthy" if self.healthy else "unhealthy")
        return (
            f"<Endpoint {self.address}:{self.port} {state}, {self.active} active, "
            f"{self.connections} connections, {len(self.idle)} idle>"
        )


class Waiter:
    """A request waiting for a connection because the cluster is at max_connections."""

    __slots__ = ("connect", "deliver", "endpoint", "fail")

    def __init__(
        self,
        endpoint: EndpointState,
        deliver: Callable[[UpstreamConnection], None],
        fail: Callable[[str, str], None],
        connect: Callable[[EndpointState], None],
    ) -> None:
        self.endpoint = endpoint
        self.deliver = deliver
        self.fail = fail
        self.connect = connect


class ClusterCounters:
    """Counts that outlive a cluster's rebuild on a new snapshot, so limits never drift."""

    __slots__ = ("active_requests", "active_retries", "connections")

    def __init__(self) -> None:
        self.active_requests = 0
        self.active_retries = 0
        self.connections = 0


class PoolSettings:
    """A cluster's pool limits (`PoolLimits`) as attributes that compiled code reads directly."""

    __slots__ = (
        "connect_timeout",
        "idle_timeout",
        "max_connections",
        "max_pending",
        "max_requests",
        "max_requests_per_connection",
        "max_retries",
        "tcp_idle_timeout",
    )

    def __init__(self, limits: PoolLimits) -> None:
        self.max_connections = limits.max_connections
        self.max_pending = limits.max_pending
        self.max_requests = limits.max_requests
        self.max_requests_per_connection = limits.max_requests_per_connection
        self.max_retries = limits.max_retries
        self.connect_timeout = limits.connect_timeout
        self.idle_timeout = limits.idle_timeout
        self.tcp_idle_timeout = limits.tcp_idle_timeout


class ClusterState:
    """Everything a cluster keeps between requests; rebuilt when its snapshot entry changes."""

    __slots__ = (
        "available",
        "balancer",
        "config",
        "connecting",
        "counters",
        "endpoints",
        "hashed",
        "in_mesh",
        "limits",
        "mesh_tls",
        "name",
        "outlier_detection",
        "peak_ewma",
        "pending",
        "retired",
        "successor",
    )

    def __init__(self, config: Cluster, previous: ClusterState | None = None) -> None:
        self.name = config.name
        self.config = config
        # Read per request: attributes of this class, which compiled code reads directly.
        self.limits = PoolSettings(config.limits)
        self.hashed = config.hash_policy is not None
        self.peak_ewma = config.lb_policy == "PEAK_EWMA"
        self.outlier_detection = config.outlier_detection
        self.in_mesh = any(endpoint.identity for endpoint in config.endpoints)
        """Its endpoints are sidecars of the mesh (reached over mTLS): requests carry peer
        metadata (peer.py)."""
        self.mesh_tls: MeshTls | None = previous.mesh_tls if previous is not None else None
        kept = {e.key: e for e in previous.endpoints} if previous is not None else {}
        self.endpoints: list[EndpointState] = []
        for endpoint in config.endpoints:
            state = kept.get((endpoint.address, endpoint.port))
            if state is None:
                state = EndpointState(endpoint)
            else:
                state.weight = max(1, endpoint.weight)
                state.identity = endpoint.identity
                if config.health_check is None:
                    state.check_failed = False
                    state.failed_checks = state.passed_checks = 0
                state.healthy = endpoint.healthy and not state.check_failed
            self.endpoints.append(state)
        self.balancer: Balancer = balancer_for(config.lb_policy)
        self.counters: ClusterCounters = (
            previous.counters if previous is not None else ClusterCounters()
        )
        self.pending: deque[Waiter] = deque()
        # Waiters in `pending` whose own connection is being opened: not queued behind others.
        self.connecting = 0
        self.retired = False
        self.successor: ClusterState | None = None
        self.available: list[EndpointState] = []
        self.refresh()

    def refresh(self, now: float | None = None) -> None:
        """Recompute the endpoints that may take traffic (healthy, not ejected)."""
        now = time.monotonic() if now is None else now
        usable: list[EndpointState] = []
        for endpoint in self.endpoints:
            if endpoint.ejected_until and endpoint.ejected_until <= now:
                endpoint.ejected_until = 0.0
            if endpoint.healthy and not endpoint.ejected_until:
                usable.append(endpoint)
        if not usable:
            # Panic mode, as Envoy does: when nothing is healthy, try everything not ejected.
            usable = [e for e in self.endpoints if not e.ejected_until] or list(self.endpoints)
        self.available = self.balancer.spread(usable)

    def mark_checked(self, endpoint: EndpointState) -> None:
        """An active health check changed an endpoint's verdict: balance accordingly."""
        for declared, state in zip(self.config.endpoints, self.endpoints, strict=True):
            if state is endpoint:
                state.healthy = declared.healthy and not state.check_failed
        self.refresh()

    def pick(self, key: bytes | None = None) -> EndpointState | None:
        """An endpoint for the next request, or None when the cluster has none."""
        if not self.available:
            return None
        return self.balancer.pick(self.available, key)

    def pick_other(self, avoid: EndpointState) -> EndpointState | None:
        """An endpoint other than `avoid` when there is one (retries prefer another host)."""
        others = [e for e in self.available if e is not avoid]
        if not others:
            return self.pick()
        return self.balancer.pick(others, None)

    def acquire(
        self,
        endpoint: EndpointState,
        deliver: Callable[[UpstreamConnection], None],
        fail: Callable[[str, str], None],
        connect: Callable[[EndpointState], None],
    ) -> UpstreamConnection | None:
        """An idle connection now, or None after arranging one (connect or queue) or a failure.

        Decisions only, no I/O: `connect` starts a connection whose arrival calls `deliver`;
        `fail(flag, reason)` is called when the pending queue is full.
        """
        idle = endpoint.idle
        while idle:
            connection = idle.pop()
            if connection.usable():
                return connection
        limits = self.limits
        if self.counters.connections < limits.max_connections:
            self.counters.connections += 1
            endpoint.connections += 1
            self.connecting += 1
            self.pending.append(Waiter(endpoint, deliver, fail, connect))
            connect(endpoint)
            return None
        if len(self.pending) - self.connecting >= limits.max_pending:
            fail("UO", "upstream overflow: too many pending requests")
            return None
        self.pending.append(Waiter(endpoint, deliver, fail, connect))
        return None

    def connected(self, connection: UpstreamConnection) -> None:
        """A new connection is up: give it to the oldest waiter, else keep it idle."""
        self.connecting -= 1
        self.release(connection)

    def connect_failed(self, endpoint: EndpointState, flag: str, reason: str) -> None:
        """A connection attempt failed: the waiter that caused it hears why."""
        self.connecting -= 1
        self.counters.connections -= 1
        endpoint.connections -= 1
        for waiter in self.pending:
            if waiter.endpoint is endpoint:
                self.pending.remove(waiter)
                waiter.fail(flag, reason)
                break
        self._open_for_queued()

    def release(self, connection: UpstreamConnection) -> None:
        """A connection is free again: hand it to a waiter or keep it idle."""
        if self.pending:
            # The oldest waiter takes it, even if it had picked another endpoint: waiting longer
            # for that one would be worse balancing than using this one now.
            self.pending.popleft().deliver(connection)
            return
        if self.retired:
            self._hand_on(connection)
            return
        connection.endpoint.idle.append(connection)
        connection.idle_since = time.monotonic()

    def closed(self, connection: UpstreamConnection) -> None:
        """A connection closed: forget it, and let a waiter open a new one in its place."""
        self.counters.connections -= 1
        endpoint = connection.endpoint
        endpoint.connections -= 1
        if connection in endpoint.idle:
            endpoint.idle.remove(connection)
        self._open_for_queued()

    def take_slot(self, endpoint: EndpointState) -> bool:
        """Count in a connection opened outside the queue; False at max_connections."""
        if self.counters.connections >= self.limits.max_connections:
            return False
        self.counters.connections += 1
        endpoint.connections += 1
        return True

    def free_slot(self, endpoint: EndpointState) -> None:
        """A connection taken with take_slot could not be opened."""
        self.counters.connections -= 1
        endpoint.connections -= 1
        self._open_for_queued()

    def _open_for_queued(self) -> None:
        # A connection slot came free. Requests queued at max_connections wait for a release,
        # and a connection that closes instead is never released: open one in its place.
        if len(self.pending) <= self.connecting:
            return
        if self.counters.connections >= self.limits.max_connections:
            return
        waiter = self.pending[0]
        self.counters.connections += 1
        waiter.endpoint.connections += 1
        self.connecting += 1
        waiter.connect(waiter.endpoint)

    def retire(self, successor: ClusterState | None) -> None:
        """A new snapshot replaced this cluster (by `successor`, or by nothing).

        Requests already waiting here are still served; a connection freed later goes on to the
        successor when its endpoint lives on there, and closes otherwise, as idle ones to
        endpoints that are gone do now.
        """
        self.retired = True
        self.successor = successor
        kept = set(successor.endpoints) if successor is not None else set()
        for endpoint in self.endpoints:
            if endpoint not in kept:
                for connection in list(endpoint.idle):
                    connection.close()

    def _hand_on(self, connection: UpstreamConnection) -> None:
        successor = self.successor
        if successor is not None and connection.endpoint in successor.endpoints:
            connection.cluster = successor
            successor.release(connection)
        else:
            connection.close()

    def sweep(self, now: float) -> None:
        """Close connections idle for longer than idle_timeout; end expired ejections."""
        limit = self.limits.idle_timeout
        for endpoint in self.endpoints:
            for connection in [c for c in endpoint.idle if now - c.idle_since > limit]:
                connection.close()
        if any(e.ejected_until and e.ejected_until <= now for e in self.endpoints):
            self.refresh(now)

    def report(self, endpoint: EndpointState, status: int, gateway_error: bool) -> None:
        """Outlier detection: count consecutive failures of an endpoint, eject when too many."""
        detection = self.outlier_detection
        if detection is None:
            return
        if status >= 500 or gateway_error:
            endpoint.consecutive_5xx += 1
            if gateway_error:
                endpoint.consecutive_gateway += 1
        else:
            endpoint.consecutive_5xx = 0
            endpoint.consecutive_gateway = 0
            return
        tripped = (
            detection.consecutive_5xx and endpoint.consecutive_5xx >= detection.consecutive_5xx
        ) or (
            detection.consecutive_gateway_errors
            and endpoint.consecutive_gateway >= detection.consecutive_gateway_errors
        )
        if tripped:
            self._eject(endpoint, detection.base_ejection_time, detection.max_ejection_percent)

    def _eject(self, endpoint: EndpointState, base: float, max_percent: int) -> None:
        ejected = sum(1 for e in self.endpoints if e.ejected_until)
        # Always allow one ejection, as Envoy does, so a two-endpoint cluster can shed one.
        if ejected and (ejected + 1) * 100 > max_percent * len(self.endpoints):
            return
        endpoint.ejections += 1
        endpoint.ejected_until = time.monotonic() + base * endpoint.ejections
        endpoint.consecutive_5xx = 0
        endpoint.consecutive_gateway = 0
        self.refresh()

    # Admission and accounting: what a request and each of its tries count, and against whom.

    def admit(self) -> None:
        """A request is on its way to this cluster: it counts until `request_ended`."""
        self.counters.active_requests += 1

    def over_limit(self) -> bool:
        """The circuit breaker on requests in flight (max_requests)."""
        return self.counters.active_requests > self.limits.max_requests

    def retry_started(self) -> None:
        """A request's first retry: outstanding until the request ends, as in Envoy."""
        self.counters.active_retries += 1

    def request_ended(self, retried: bool) -> None:
        """An admitted request ended (`retried`: it had counted as a retry)."""
        self.counters.active_requests -= 1
        if retried:
            self.counters.active_retries -= 1

    def try_started(self, endpoint: EndpointState) -> None:
        """A try picked `endpoint`: its load, for the balancer."""
        endpoint.active += 1

    def try_moved(self, picked: EndpointState, serving: EndpointState) -> None:
        """A try got a connection to another endpoint than it picked (the oldest waiter takes a
        freed connection): the load, latency and outcome are the serving endpoint's."""
        picked.active -= 1
        serving.active += 1

    def try_ended(
        self,
        endpoint: EndpointState,
        started: float,
        *,
        record: bool,
        status: int = 0,
        gateway_error: bool = False,
    ) -> None:
        """A try on `endpoint` ended. Unless it was given up (`record` False), its latency since
        `started` (0: never sent) feeds PEAK_EWMA, and its outcome outlier detection: `status`,
        or a gateway error (no usable response), counted as a 503."""
        endpoint.active -= 1
        if not record:
            return
        if started and self.peak_ewma:
            now = time.monotonic()
            endpoint.observe_latency(now - started, now)
        if self.outlier_detection is not None:
            self.report(endpoint, 503 if gateway_error else status, gateway_error)

    def retry_allowed(self) -> bool:
        """The retry budget and max_retries: retries never multiply load in an outage."""
        budget = self.config.retry_budget
        counters = self.counters
        allowed = max(budget.min_concurrency, counters.active_requests * budget.percent / 100.0)
        return (
            counters.active_retries < allowed and counters.active_retries < self.limits.max_retries
        )

    def __repr__(self) -> str:
        idle = sum(len(e.idle) for e in self.endpoints)
        return (
            f"<Cluster {self.name}: {self.counters.active_requests} active, {idle} idle, "
            f"{len(self.pending)} queued, {self.counters.connections} connections>"
        )


def jittered_backoff(attempt: int, base: float, cap: float) -> float:
    """Full-jitter exponential backoff: a random wait up to base * 2^attempt, at most cap."""
    return random.uniform(0, min(cap, base * (2**attempt)))


async def open_connection(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], UpstreamConnection],
    endpoint: EndpointState,
    timeout: float,
    mesh_tls: MeshTls | None = None,
) -> UpstreamConnection:
    """Connect to an endpoint within `timeout` seconds (with mTLS when it has an identity)."""
    identity = endpoint.identity
    if not identity:
        async with asyncio.timeout(timeout):
            _, protocol = await loop.create_connection(factory, endpoint.address, endpoint.port)
        return protocol
    if mesh_tls is None:
        raise MeshIdentityError("no workload certificate to call a mesh endpoint with mTLS")
    async with asyncio.timeout(timeout):
        transport, protocol = await loop.create_connection(
            factory, endpoint.address, endpoint.port, ssl=mesh_tls.client, server_hostname=""
        )
    peer = peer_spiffe_id(transport.get_extra_info("peercert"))
    if peer != identity:
        transport.abort()
        raise MeshIdentityError(f"upstream is {peer or 'anonymous'}, expected {identity}")
    return protocol
