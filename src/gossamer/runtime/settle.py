"""When `up` may say the mesh is ready: its processes ready, and the mesh routing to them.

A replica's app passing its readiness probe is not yet a replica the gateway can reach: its
sidecar probes the app too, tells the control plane, which marks its WorkloadEntry healthy and
pushes new endpoints to every proxy after its debounce. `up` returned between the two, and a
first request could meet `503 no healthy upstream`. So `up` also waits until every long-running
replica's entry is healthy and every proxy runs what was last pushed, twice in a row a little
longer than the push debounce apart (a change the control plane has not yet seen leaves every
proxy SYNCED for that long).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

log = logging.getLogger(__name__)

ENTRIES = "/apis/networking.istio.io/v1/workloadentries"
PROXIES = "/debug/v1/proxies"
STEADY_S = 0.25
"""How far apart the two looks are: longer than the control plane's push debounce (100 ms)."""


async def routing_settled(api: httpx.AsyncClient, instances: int, timeout_s: float) -> bool:
    """Wait until `instances` registered instances are healthy and every proxy is SYNCED, on two
    looks `STEADY_S` apart; False (and a warning) if that has not happened within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    steady = False
    while True:
        settled = await _settled(api, instances)
        if settled and steady:
            return True
        steady = settled
        if time.monotonic() > deadline:
            log.warning(
                "the mesh's processes are ready, but its routing had not settled within %.0fs",
                timeout_s,
            )
            return False
        await asyncio.sleep(STEADY_S)


async def _settled(api: httpx.AsyncClient, instances: int) -> bool:
    try:
        entries = await api.get(ENTRIES)
        proxies = await api.get(PROXIES)
    except httpx.HTTPError:
        return False
    if entries.status_code != 200 or proxies.status_code != 200:
        return False
    healthy = sum(1 for item in entries.json().get("items") or [] if _healthy(item))
    states = [p.get("state") for p in proxies.json().get("items") or []]
    return healthy >= instances and all(s == "SYNCED" for s in states)


def _healthy(entry: dict[str, Any]) -> bool:
    conditions = (entry.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Healthy" and c.get("status") == "True" for c in conditions)
