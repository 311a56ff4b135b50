"""Balancing over real sockets: consistent hashing on a header pins each key to one backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from gossamer.snapshot import HashPolicy, Snapshot

from .backend import Backend
from .harness import Running, cluster, snapshot, to

Run = Callable[[Snapshot], Awaitable[Running]]
BY_USER = HashPolicy(header="x-user")


@pytest.fixture
async def trio() -> AsyncIterator[list[Backend]]:
    backends = [await Backend(name).start() for name in ("one", "two", "three")]
    yield backends
    for backend in backends:
        await backend.stop()


async def owners(proxy: Running, users: range, repeat: int = 3) -> dict[int, set[str]]:
    seen: dict[int, set[str]] = {}
    async with httpx.AsyncClient() as client:
        for user in users:
            for _ in range(repeat):
                response = await client.get(proxy.url, headers={"x-user": f"user-{user}"})
                seen.setdefault(user, set()).add(response.headers["x-backend"])
    return seen


async def test_a_hash_header_pins_each_user_to_one_backend(
    trio: list[Backend], run_proxy: Run
) -> None:
    ports = [b.port for b in trio]
    ring = cluster("ring", *ports, lb_policy="RING_HASH", hash_policy=BY_USER)
    proxy = await run_proxy(snapshot([to("ring")], [ring]))
    before = await owners(proxy, range(30))
    assert all(len(backends) == 1 for backends in before.values())
    assert set().union(*before.values()) == {"one", "two", "three"}

    # "three" leaves: only its users move.
    smaller = cluster("ring", *ports[:2], lb_policy="RING_HASH", hash_policy=BY_USER)
    await proxy.proxy.apply(snapshot([to("ring")], [smaller], version="2"))
    after = await owners(proxy, range(30), repeat=1)
    for user, backends in before.items():
        if backends != {"three"}:
            assert after[user] == backends


async def test_requests_without_the_hash_header_are_still_served(
    trio: list[Backend], run_proxy: Run
) -> None:
    ring = cluster("ring", *(b.port for b in trio), lb_policy="RING_HASH", hash_policy=BY_USER)
    proxy = await run_proxy(snapshot([to("ring")], [ring]))
    async with httpx.AsyncClient() as client:
        statuses = {(await client.get(proxy.url)).status_code for _ in range(10)}
    assert statuses == {200}
