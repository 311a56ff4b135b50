"""The retry budget over real sockets: a retry is outstanding until its request ends, so in an
outage retries stay within the budget instead of multiplying the load."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx

from gossamer.snapshot import PoolLimits, RetryBudget, RetryPolicy, Snapshot

from .backend import Backend
from .harness import Running, cluster, snapshot, to

Run = Callable[[Snapshot], Awaitable[Running]]


async def test_a_retry_in_flight_counts_against_the_budget(
    backend: Backend, run_proxy: Run
) -> None:
    retries = RetryPolicy(attempts=1, retry_on=("5xx",), backoff_base=0.001, backoff_max=0.001)
    one_retry = cluster(
        "one",
        backend.port,
        retry_budget=RetryBudget(percent=0.0, min_concurrency=1),
        limits=PoolLimits(max_retries=1),
    )
    proxy = await run_proxy(snapshot([to("one", retries=retries)], [one_retry]))
    failing_slowly = {"x-status": "503", "x-delay": "0.3"}
    async with httpx.AsyncClient() as client:
        requests = []
        for _ in range(3):
            requests.append(asyncio.create_task(client.get(proxy.url, headers=failing_slowly)))
            # Each fails while the first one's retry (0.3 s to 0.6 s) is still in flight.
            await asyncio.sleep(0.1)
        responses = await asyncio.gather(*requests)
    assert [r.status_code for r in responses] == [503] * 3
    assert len(backend.requests) == 4
    counters = proxy.proxy.stats.counters
    assert counters['gossamer_retry_overflow_total{cluster="one"}'] == 2
    assert proxy.proxy.clusters["one"].counters.active_retries == 0
