"""Active HTTP health checks: probe each endpoint of a cluster that asks for it, mark its health.

One scheduling task per proxy wakes when the next probe is due (or a snapshot changes) and
starts the probes due then; each probe opens its own short connection, never one of the request
pool's, and is bounded by the check's timeout. An endpoint turns unhealthy after
`unhealthy_threshold` failed probes in a row and healthy again after `healthy_threshold` passed
ones; the cluster then recomputes the endpoints it balances over. Endpoints start healthy, as
the control plane declared them, and are probed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from gossamer.proxy.cluster import ClusterState, EndpointState
from gossamer.proxy.stats import ProxyStats
from gossamer.snapshot import HealthCheck

log = logging.getLogger(__name__)

# The longest the scheduler sleeps with nothing due (a new snapshot wakes it sooner).
IDLE_WAKE = 5.0
# A probe reads the status line only; a longer one is not an HTTP/1.x status line.
MAX_STATUS_LINE = 1024


def record_probe(endpoint: EndpointState, check: HealthCheck, passed: bool) -> bool:
    """Count one probe's result; True when the endpoint's verdict changed."""
    if passed:
        endpoint.failed_checks = 0
        endpoint.passed_checks += 1
        if endpoint.check_failed and endpoint.passed_checks >= check.healthy_threshold:
            endpoint.check_failed = False
            return True
    else:
        endpoint.passed_checks = 0
        endpoint.failed_checks += 1
        if not endpoint.check_failed and endpoint.failed_checks >= check.unhealthy_threshold:
            endpoint.check_failed = True
            return True
    return False


def passing_status(status_line: bytes) -> bool:
    """A 2xx status line passes."""
    parts = status_line.split(None, 2)
    return (
        len(parts) >= 2
        and parts[0].startswith(b"HTTP/1.")
        and len(parts[1]) == 3
        and parts[1].startswith(b"2")
        and parts[1].isdigit()
    )


async def probe(endpoint: EndpointState, check: HealthCheck, host: str) -> bool:
    """GET the check's path on a new connection; True for a 2xx within the timeout."""
    request = (
        f"GET {check.path} HTTP/1.1\r\nhost: {host}\r\n"
        "user-agent: gossamer-health-check\r\nconnection: close\r\n\r\n"
    ).encode("latin-1")
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(check.timeout):
            reader, writer = await asyncio.open_connection(
                endpoint.address, endpoint.port, limit=MAX_STATUS_LINE
            )
            writer.write(request)
            status_line = await reader.readline()
    except (OSError, TimeoutError, ValueError):
        return False
    finally:
        if writer is not None:
            writer.transport.abort()
    return passing_status(status_line)


class HealthChecker:
    """Probes the endpoints of every cluster with a health check, from one task per proxy."""

    def __init__(self, stats: ProxyStats) -> None:
        self.stats = stats
        self.clusters: dict[str, ClusterState] = {}
        self._due: dict[EndpointState, float] = {}
        self._probes: dict[EndpointState, asyncio.Task[bool]] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def watch(self, clusters: dict[str, ClusterState]) -> None:
        """Check these clusters from now on (called when a snapshot is applied)."""
        self.clusters = clusters
        if self._task is None and any(c.config.health_check for c in clusters.values()):
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()

    async def close(self) -> None:
        """Stop probing."""
        tasks = [*self._probes.values(), *([self._task] if self._task is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        self._probes.clear()

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            wake_at = self._start_due_probes(now)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, wake_at - now))

    def _start_due_probes(self, now: float) -> float:
        """Start every probe due by `now`; return when the next one is due."""
        wake_at = now + IDLE_WAKE
        due: dict[EndpointState, float] = {}
        for cluster in self.clusters.values():
            check = cluster.config.health_check
            if check is None:
                continue
            for endpoint in cluster.endpoints:
                at = self._due.get(endpoint, now)
                if at <= now:
                    if endpoint not in self._probes:
                        self._start(cluster.name, check, endpoint)
                    at = now + check.interval
                due[endpoint] = at
                wake_at = min(wake_at, at)
        self._due = due
        return wake_at

    def _start(self, cluster: str, check: HealthCheck, endpoint: EndpointState) -> None:
        task = asyncio.get_running_loop().create_task(probe(endpoint, check, cluster))
        self._probes[endpoint] = task
        task.add_done_callback(lambda done: self._finished(cluster, check, endpoint, done))

    def _finished(
        self, name: str, check: HealthCheck, endpoint: EndpointState, done: asyncio.Task[bool]
    ) -> None:
        self._probes.pop(endpoint, None)
        if done.cancelled():
            return
        passed = done.result()
        result = "passed" if passed else "failed"
        self.stats.incr(f'gossamer_health_checks_total{{cluster="{name}",result="{result}"}}')
        if not record_probe(endpoint, check, passed):
            return
        verdict = "failing" if endpoint.check_failed else "passing"
        log.info("health check %s: %s:%d is %s", name, endpoint.address, endpoint.port, verdict)
        cluster = self.clusters.get(name)
        if cluster is not None:
            cluster.mark_checked(endpoint)
