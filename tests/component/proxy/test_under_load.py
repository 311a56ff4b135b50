"""Faults under steady load, on loopback, bounded in time: a replica killed with SIGKILL, and
snapshots swapped every 100 ms. Clients must see no failure at all."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from gossamer.snapshot import (
    HeaderMatch,
    OutlierDetection,
    PoolLimits,
    RetryBudget,
    RetryPolicy,
    Route,
    RouteMatch,
    Snapshot,
    StringMatch,
    WeightedCluster,
)

from .backend import Backend
from .harness import Running, cluster, snapshot, to

Run = Callable[[Snapshot], Awaitable[Running]]
CONCURRENCY = 50
REPLICA = Path(__file__).with_name("replica.py")


class Tally:
    """What the clients saw: statuses, and the reasons of everything but a 200."""

    def __init__(self) -> None:
        self.statuses: Counter[int | str] = Counter()
        self.failures: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


async def steady_load(
    url: str, seconds: float, paths: tuple[str, ...] = ("/",), **headers: str
) -> Tally:
    """CONCURRENCY clients, each sending requests one after another for `seconds`."""
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + seconds
    return await _load(url, lambda: loop.time() < stop_at, paths, headers)


async def counted_load(url: str, requests: int) -> Tally:
    """`requests` requests in all from CONCURRENCY clients, each sending one after another."""
    budget = iter(range(requests))
    return await _load(url, lambda: next(budget, None) is not None, ("/",), {})


async def _load(
    url: str, more: Callable[[], bool], paths: tuple[str, ...], headers: dict[str, str]
) -> Tally:
    """CONCURRENCY clients, each sending requests one after another while `more()` says so."""
    tally = Tally()
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)

    async def client_loop(client: httpx.AsyncClient, number: int) -> None:
        sent = 0
        while more():
            path = paths[(number + sent) % len(paths)]
            sent += 1
            try:
                response = await client.get(url + path, headers=headers)
            except httpx.HTTPError as error:
                tally.statuses["error"] += 1
                tally.failures[repr(error)] += 1
                continue
            tally.statuses[response.status_code] += 1
            if response.status_code != 200:
                tally.failures[response.headers.get("x-gossamer-reason", "")] += 1

    async with httpx.AsyncClient(limits=limits, timeout=5.0) as client:
        await asyncio.gather(*(client_loop(client, n) for n in range(CONCURRENCY)))
    return tally


class Replica:
    """replica.py in its own process."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, port: int) -> None:
        self.name = name
        self.process = process
        self.port = port

    @classmethod
    async def start(cls, name: str) -> Replica:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(REPLICA), name, stdout=asyncio.subprocess.PIPE
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 10.0)
        return cls(name, process, int(line))

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await asyncio.wait_for(self.process.wait(), 5.0)


@pytest.fixture
async def replicas() -> AsyncIterator[list[Replica]]:
    started = await asyncio.gather(*(Replica.start(f"r{n}") for n in range(3)))
    yield list(started)
    for replica in started:
        await replica.kill()


async def test_one_of_three_replicas_killed_under_load_fails_no_request(
    replicas: list[Replica], run_proxy: Run
) -> None:
    retries = RetryPolicy(
        attempts=3,
        retry_on=("5xx", "gateway-error", "connect-failure", "reset"),
        backoff_base=0.005,
        backoff_max=0.05,
    )
    detection = OutlierDetection(
        consecutive_5xx=3,
        consecutive_gateway_errors=2,
        base_ejection_time=30.0,
        max_ejection_percent=50,
    )
    replicated = cluster(
        "replicated",
        *(r.port for r in replicas),
        lb_policy="ROUND_ROBIN",
        outlier_detection=detection,
        limits=PoolLimits(max_retries=CONCURRENCY),
        retry_budget=RetryBudget(percent=100.0, min_concurrency=10),
    )
    proxy = await run_proxy(snapshot([to("replicated", retries=retries)], [replicated]))
    victim = replicas[1]

    async def kill_soon() -> None:
        await asyncio.sleep(1.5)
        await victim.kill()

    tally, _ = await asyncio.gather(steady_load(proxy.url, 4.0), kill_soon())
    assert tally.failures == Counter(), tally.statuses
    # Enough requests to overlap the kill (speed is bench/'s business, and CI machines are busy).
    assert tally.statuses[200] > 150
    retried = proxy.proxy.stats.counters['gossamer_upstream_retries_total{cluster="replicated"}']
    assert retried > 0
    state = proxy.proxy.clusters["replicated"]
    ejected = {e.port: bool(e.ejected_until) for e in state.endpoints}
    assert ejected == {r.port: r is victim for r in replicas}
    async with httpx.AsyncClient() as client:
        after = {(await client.get(proxy.url)).headers["x-backend"] for _ in range(10)}
    assert after == {"r0", "r2"}


async def test_snapshots_swapped_every_100ms_under_load_fail_no_request(
    backend: Backend, backend2: Backend, run_proxy: Run
) -> None:
    third = await Backend("three").start()
    try:
        blue, green = _two_snapshots(backend, backend2, third)
        proxy = await run_proxy(blue)

        async def swap_for(seconds: float) -> int:
            swaps = 0
            loop = asyncio.get_running_loop()
            stop_at = loop.time() + seconds
            while loop.time() < stop_at:
                await asyncio.sleep(0.1)
                swaps += 1
                await proxy.proxy.apply(green if swaps % 2 else blue)
            return swaps

        tally, swaps = await asyncio.gather(
            steady_load(proxy.url, 4.0, paths=("/", "/shared", "/fixed")), swap_for(3.5)
        )
        assert tally.failures == Counter(), tally.statuses
        # Enough requests to overlap every swap (speed is bench/'s business; CI machines are busy).
        assert tally.statuses[200] > 150 and swaps >= 25
        served = {b.name: len(b.requests) for b in (backend, backend2, third)}
        assert all(served.values()), served
    finally:
        await third.stop()


def _two_snapshots(one: Backend, two: Backend, three: Backend) -> tuple[Snapshot, Snapshot]:
    """Different route tables, clusters and endpoints, all pointing at live backends."""

    def prefix(path: str) -> RouteMatch:
        return RouteMatch(path=StringMatch(kind="prefix", value=path))

    blue = snapshot(
        [
            Route(name="shared", match=prefix("/shared"), clusters=(WeightedCluster("shared"),)),
            Route(name="fixed", match=prefix("/fixed"), clusters=(WeightedCluster("blue"),)),
            to("blue"),
        ],
        [cluster("blue", one.port, two.port), cluster("shared", three.port, one.port)],
        version="blue",
    )
    canary = HeaderMatch(name="x-canary")
    green = snapshot(
        [
            Route(
                name="canary",
                match=RouteMatch(headers=(canary,)),
                clusters=(WeightedCluster("shared"),),
            ),
            Route(name="shared", match=prefix("/shared"), clusters=(WeightedCluster("shared"),)),
            Route(
                name="split",
                match=prefix("/"),
                clusters=(
                    WeightedCluster("green", weight=50),
                    WeightedCluster("shared", weight=50),
                ),
            ),
        ],
        [cluster("green", two.port, three.port), cluster("shared", three.port)],
        version="green",
    )
    return blue, green


async def test_finished_requests_leave_no_timeouts_behind(backend: Backend, run_proxy: Run) -> None:
    # Each request arms its route's 15 s timeout and its per-try timeout, and finishes long
    # before either. What they armed must go with them, or memory grows with the request rate
    # times the timeout.
    retries = RetryPolicy(attempts=2, per_try_timeout=10.0)
    proxy = await run_proxy(
        snapshot([to("one", timeout=15.0, retries=retries)], [cluster("one", backend.port)])
    )
    timers = proxy.proxy.timers
    assert timers is not None
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            most = max(most, len(timers))
            await asyncio.sleep(0.001)

    watching = asyncio.create_task(watch())
    try:
        tally = await counted_load(proxy.url, 300)
    finally:
        watching.cancel()
    assert tally.statuses == Counter({200: 300}), tally.failures
    assert most > 0  # the requests did arm timeouts while they were in flight
    assert len(timers) == 0  # no bucket kept for timeouts that were all cancelled
