"""The registry's TTL: a disconnected instance goes after the TTL, a dead replica's instances too,
and a person's static WorkloadEntry never. Real sqlite store, a clock the test moves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gossamer.control.api.catalog import Catalog
from gossamer.control.mesh.mirror import StoreMirror
from gossamer.control.mesh.registry import ENTRIES, Registration, Registry
from gossamer.control.store import NotFoundError, ObjectKey
from gossamer.control.store.sqlite import SqliteStore
from gossamer.snapshot.protocol import Instance

from ..proxy.waiting import eventually

TTL = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def mirror(tmp_path: Path) -> AsyncIterator[StoreMirror]:
    store = await SqliteStore.open(tmp_path / "store.db")
    mirrored = StoreMirror(store, Catalog())
    mirrored.start()
    await asyncio.wait_for(mirrored.synced.wait(), 10)
    yield mirrored
    await mirrored.close()
    await store.close()


def registration(address: str) -> Registration:
    return Registration("reviews", "default", Instance(address, 15006), {"app": "reviews"}, "rev")


async def exists(mirror: StoreMirror, key: ObjectKey) -> bool:
    try:
        await mirror.store.get(key)
    except NotFoundError:
        return False
    return True


async def settle(mirror: StoreMirror, key: ObjectKey, present: bool) -> None:
    await eventually(lambda: (key in mirror.objects) == present, what=f"{key} mirrored")


async def test_a_disconnected_instance_is_removed_after_the_ttl_unless_it_comes_back(
    mirror: StoreMirror,
) -> None:
    clock = Clock()
    registry = Registry(mirror.store, mirror, "replica-a", ttl_s=TTL, now=clock)
    key = await registry.register(registration("10.0.0.1"), ready=True)
    await registry.disconnected(key)
    await settle(mirror, key, True)
    clock.advance(TTL - 1)
    assert await registry.collect() == 0
    # It came back (to another replica) before the TTL: nothing is removed, ever.
    other = Registry(mirror.store, mirror, "replica-b", ttl_s=TTL, now=clock)
    await other.register(registration("10.0.0.1"), ready=True)
    clock.advance(TTL * 3)
    await other.renew_lease()
    await registry.renew_lease()
    await eventually(lambda: "replica-b" in {k.name for k in mirror.objects})
    assert await registry.collect() == 0
    # Now it leaves for good.
    await other.disconnected(key)
    await asyncio.sleep(0.05)
    clock.advance(TTL + 1)
    await eventually(
        lambda: (
            "gossamer.dev/disconnected-at" in mirror.objects[key].body["metadata"]["annotations"]
        )
    )
    assert await registry.collect() == 1
    assert not await exists(mirror, key)


async def test_a_dead_replicas_instances_are_collected_by_a_live_one(mirror: StoreMirror) -> None:
    clock = Clock()
    dead = Registry(mirror.store, mirror, "replica-dead", ttl_s=TTL, now=clock)
    alive = Registry(mirror.store, mirror, "replica-alive", ttl_s=TTL, now=clock)
    await dead.renew_lease()
    key = await dead.register(registration("10.0.0.2"), ready=True)
    await settle(mirror, key, True)
    clock.advance(TTL / 2)
    await alive.renew_lease()
    assert await alive.collect() == 0  # its lease is still fresh
    clock.advance(TTL)
    await alive.renew_lease()
    assert await alive.collect() == 1
    assert not await exists(mirror, key)


async def test_a_static_workload_entry_is_never_collected(mirror: StoreMirror) -> None:
    clock = Clock()
    registry = Registry(mirror.store, mirror, "replica-a", ttl_s=TTL, now=clock)
    key = ObjectKey(ENTRIES, "default", "vm-1")
    await mirror.store.create(
        key,
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadEntry",
            "metadata": {"name": "vm-1", "namespace": "default"},
            "spec": {"address": "10.0.0.9", "labels": {"app": "reviews"}},
        },
    )
    await settle(mirror, key, True)
    clock.advance(TTL * 100)
    assert await registry.collect() == 0
    assert await exists(mirror, key)


async def test_a_restarted_replica_removes_nothing_before_its_proxies_could_reconnect(
    mirror: StoreMirror,
) -> None:
    clock = Clock()
    killed = Registry(mirror.store, mirror, "replica-killed", ttl_s=TTL, now=clock)
    await killed.renew_lease()
    back = await killed.register(registration("10.0.0.3"), ready=True)
    gone = await killed.register(registration("10.0.0.4"), ready=True)
    await settle(mirror, gone, True)
    # Killed with -9 (nothing marked disconnected), and down for longer than the TTL.
    clock.advance(TTL * 3)
    grace = 15.0
    restarted = Registry(
        mirror.store, mirror, "replica-restarted", ttl_s=TTL, grace_s=grace, now=clock
    )
    await restarted.renew_lease()
    assert await restarted.collect() == 0
    clock.advance(grace - 1)
    await restarted.register(registration("10.0.0.3"), ready=True)  # its proxy is back
    await eventually(
        lambda: (
            mirror.objects[back].body["metadata"]["annotations"]["gossamer.dev/controller"]
            == "replica-restarted"
        )
    )
    assert await restarted.collect() == 0
    clock.advance(2)
    # Past the grace: only the instance whose proxy never came back is removed.
    assert await restarted.collect() == 1
    assert await exists(mirror, back)
    assert not await exists(mirror, gone)
