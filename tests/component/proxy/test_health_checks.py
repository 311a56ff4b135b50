"""Active health checks over real sockets: a failing endpoint leaves the rotation and returns."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gossamer.snapshot import HealthCheck, Snapshot

from .backend import Backend, Received
from .harness import Running, cluster, snapshot, to
from .waiting import eventually

Run = Callable[[Snapshot], Awaitable[Running]]
CHECK = HealthCheck(
    path="/healthz", interval=0.05, timeout=0.5, unhealthy_threshold=2, healthy_threshold=2
)


@dataclass
class CheckedBackend(Backend):
    """A backend whose health path answers `health_status`, whatever its other paths do."""

    health_status: int = 200

    async def _answer(self, received: Received, writer: asyncio.StreamWriter) -> bool:
        if received.target != "/healthz":
            return await super()._answer(received, writer)
        writer.write(b"HTTP/1.1 %d Health\r\ncontent-length: 0\r\n\r\n" % self.health_status)
        await writer.drain()
        return False

    def probes(self) -> list[Received]:
        return [r for r in self.requests if r.target == "/healthz"]


@pytest.fixture
async def pair() -> AsyncIterator[tuple[CheckedBackend, CheckedBackend]]:
    one, two = await CheckedBackend("one").start(), await CheckedBackend("two").start()
    assert isinstance(one, CheckedBackend) and isinstance(two, CheckedBackend)
    yield one, two
    await one.stop()
    await two.stop()


def healthy(proxy: Running, port: int) -> bool:
    """The endpoint's health as the balancer sees it."""
    cluster_state = next(iter(proxy.proxy.clusters.values()))
    return next(e.healthy for e in cluster_state.endpoints if e.port == port)


async def endpoints(proxy: Running) -> dict[int, dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        clusters = (await client.get(f"http://127.0.0.1:{proxy.admin.port}/clusters")).json()
    return {int(e["address"].rsplit(":", 1)[1]): e for e in clusters[0]["endpoints"]}


async def served_by(proxy: Running, count: int) -> set[str]:
    async with httpx.AsyncClient() as client:
        responses = [await client.get(proxy.url) for _ in range(count)]
    assert all(r.status_code == 200 for r in responses)
    return {r.headers["x-backend"] for r in responses}


async def test_an_endpoint_failing_its_health_check_gets_no_traffic_until_it_recovers(
    pair: tuple[CheckedBackend, CheckedBackend], run_proxy: Run
) -> None:
    one, two = pair
    checked = cluster("pair", one.port, two.port, lb_policy="ROUND_ROBIN", health_check=CHECK)
    proxy = await run_proxy(snapshot([to("pair")], [checked]))
    assert await served_by(proxy, 10) == {"one", "two"}

    one.health_status = 503
    await eventually(lambda: not healthy(proxy, one.port), what="one taken out")
    shown = (await endpoints(proxy))[one.port]
    assert shown["healthy"] is False
    assert shown["health_check"]["verdict"] == "failing"
    assert shown["health_check"]["failed_in_a_row"] >= 2
    assert await served_by(proxy, 20) == {"two"}

    one.health_status = 200
    await eventually(lambda: healthy(proxy, one.port), what="one back")
    assert await served_by(proxy, 10) == {"one", "two"}
    probe = one.probes()[0]
    assert probe.header("host") == "pair"
    assert probe.header("connection") == "close"
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{proxy.admin.port}/stats/prometheus")).text
    assert 'gossamer_health_checks_total{cluster="pair",result="failed"}' in metrics


async def test_an_unreachable_endpoint_is_taken_out_without_any_retry(
    pair: tuple[CheckedBackend, CheckedBackend], run_proxy: Run
) -> None:
    _, two = pair
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = int(s.getsockname()[1])
    checked = cluster("pair", dead, two.port, lb_policy="ROUND_ROBIN", health_check=CHECK)
    proxy = await run_proxy(snapshot([to("pair")], [checked]))

    await eventually(lambda: not healthy(proxy, dead), what="dead endpoint taken out")
    assert await served_by(proxy, 10) == {"two"}


async def test_a_snapshot_without_the_health_check_forgets_its_verdicts(
    pair: tuple[CheckedBackend, CheckedBackend], run_proxy: Run
) -> None:
    one, two = pair
    checked = cluster("pair", one.port, two.port, health_check=CHECK)
    proxy = await run_proxy(snapshot([to("pair")], [checked]))
    one.health_status = 500

    await eventually(lambda: not healthy(proxy, one.port), what="one taken out")
    unchecked = cluster("pair", one.port, two.port)
    await proxy.proxy.apply(snapshot([to("pair")], [unchecked], version="2"))
    state = (await endpoints(proxy))[one.port]
    assert state["healthy"] is True and state["health_check"] is None


async def test_probes_stop_when_the_proxy_closes(
    pair: tuple[CheckedBackend, CheckedBackend], run_proxy: Run
) -> None:
    one, two = pair
    checked = cluster("pair", one.port, two.port, health_check=CHECK)
    proxy = await run_proxy(snapshot([to("pair")], [checked]))

    await eventually(lambda: len(one.probes()) >= 2, what="two probes")
    await proxy.proxy.close()
    probes = len(one.probes())
    # Four intervals: a checker still running would have probed again.
    await asyncio.sleep(4 * CHECK.interval)
    assert len(one.probes()) == probes
