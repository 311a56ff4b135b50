"""One suite, two stores: sqlite and a real etcd must behave alike."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gossamer.control.store import (
    AlreadyExistsError,
    ConflictError,
    EventType,
    ExpiredError,
    LabelSelector,
    NotFoundError,
    ObjectKey,
    ResourceType,
    Scope,
    Store,
    StoreSettings,
    Watch,
    WatchEvent,
)

from .conftest import StoreFactory

SERVICES = ResourceType("", "services")
ROUTES = ResourceType("networking.istio.io", "virtualservices")


def key(name: str, namespace: str = "default", kind: ResourceType = SERVICES) -> ObjectKey:
    return ObjectKey(kind, namespace, name)


def body(name: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"ports": [{"port": 80}]},
    }


async def take(watch: Watch, count: int, timeout: float = 10.0) -> list[WatchEvent]:
    """The next `count` events, or fail after `timeout` seconds."""
    events: list[WatchEvent] = []
    async with asyncio.timeout(timeout):
        while len(events) < count:
            events.append(await anext(watch))
    return events


async def nothing_more(watch: Watch, wait: float = 0.3) -> None:
    """No further event arrives within `wait` seconds (a repeat would)."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(wait):
            extra = await anext(watch)
            pytest.fail(f"unexpected event {extra}")


async def test_create_sets_a_resource_version_that_get_returns(store: Store) -> None:
    created = await store.create(key("web"), body("web"))
    assert created.version > 0
    assert created.body["metadata"]["resourceVersion"] == str(created.version)
    fetched = await store.get(key("web"))
    assert fetched == created
    assert fetched.body["spec"] == {"ports": [{"port": 80}]}


async def test_a_client_supplied_resource_version_is_not_stored(store: Store) -> None:
    sent = body("web")
    sent["metadata"]["resourceVersion"] = "999999"
    created = await store.create(key("web"), sent)
    assert (await store.get(key("web"))).body["metadata"]["resourceVersion"] == str(created.version)


async def test_create_of_a_taken_name_fails(store: Store) -> None:
    await store.create(key("web"), body("web"))
    with pytest.raises(AlreadyExistsError):
        await store.create(key("web"), body("web"))
    # The same name in another namespace or of another type is another object.
    await store.create(key("web", "prod"), body("web", "prod"))
    await store.create(key("web", kind=ROUTES), body("web"))


async def test_get_of_a_missing_object_fails(store: Store) -> None:
    with pytest.raises(NotFoundError):
        await store.get(key("nope"))


async def test_revisions_grow_across_the_whole_store(store: Store) -> None:
    versions = [(await store.create(key(f"s{i}"), body(f"s{i}"))).version for i in range(4)]
    replaced = await store.replace(key("s0"), body("s0"), versions[0])
    assert versions == sorted(versions) and len(set(versions)) == 4
    assert replaced.version > versions[-1]


async def test_replace_at_the_current_version_succeeds_and_a_stale_one_conflicts(
    store: Store,
) -> None:
    first = await store.create(key("web"), body("web"))
    second = await store.replace(key("web"), body("web", tier="front"), first.version)
    assert second.version > first.version
    with pytest.raises(ConflictError) as conflict:
        await store.replace(key("web"), body("web", tier="back"), first.version)
    assert (conflict.value.expected, conflict.value.actual) == (first.version, second.version)
    assert (await store.get(key("web"))).labels == {"tier": "front"}


async def test_replace_without_a_version_overwrites(store: Store) -> None:
    await store.create(key("web"), body("web"))
    await store.replace(key("web"), body("web", tier="any"))
    assert (await store.get(key("web"))).labels == {"tier": "any"}


async def test_replace_of_a_missing_object_fails_with_or_without_a_version(store: Store) -> None:
    with pytest.raises(NotFoundError):
        await store.replace(key("nope"), body("nope"))
    with pytest.raises(NotFoundError):
        await store.replace(key("nope"), body("nope"), 1)


async def test_exactly_one_of_many_concurrent_writers_at_one_version_wins(store: Store) -> None:
    created = await store.create(key("web"), body("web"))
    results = await asyncio.gather(
        *(
            store.replace(key("web"), body("web", writer=str(i)), created.version)
            for i in range(12)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, ConflictError) for r in results if r not in winners)
    assert (await store.get(key("web"))).labels == winners[0].labels


async def test_delete_returns_the_last_state_at_the_deletion_revision(store: Store) -> None:
    created = await store.create(key("web"), body("web", tier="front"))
    deleted = await store.delete(key("web"))
    assert deleted.version > created.version
    assert deleted.labels == {"tier": "front"}
    with pytest.raises(NotFoundError):
        await store.get(key("web"))
    with pytest.raises(NotFoundError):
        await store.delete(key("web"))


async def test_delete_at_a_stale_version_conflicts_and_keeps_the_object(store: Store) -> None:
    first = await store.create(key("web"), body("web"))
    await store.replace(key("web"), body("web"), first.version)
    with pytest.raises(ConflictError):
        await store.delete(key("web"), first.version)
    await store.get(key("web"))


async def test_a_deleted_name_can_be_created_again(store: Store) -> None:
    await store.create(key("web"), body("web"))
    await store.delete(key("web"))
    again = await store.create(key("web"), body("web", generation="2"))
    assert (await store.get(key("web"))).version == again.version


async def test_list_by_type_namespace_and_labels_in_name_order(store: Store) -> None:
    for namespace, name, tier in [
        ("default", "web", "front"),
        ("default", "api", "back"),
        ("default", "db", "back"),
        ("prod", "web", "front"),
        ("prod", "cache", "back"),
    ]:
        await store.create(key(name, namespace), body(name, namespace, tier=tier))
    await store.create(key("web", kind=ROUTES), body("web"))

    def names(listing: Any) -> list[str]:
        return [f"{o.key.namespace}/{o.key.name}" for o in listing.items]

    everything = await store.list(Scope(SERVICES))
    assert names(everything) == [
        "default/api",
        "default/db",
        "default/web",
        "prod/cache",
        "prod/web",
    ]
    assert names(await store.list(Scope(SERVICES, "prod"))) == ["prod/cache", "prod/web"]
    back = Scope(SERVICES, labels=LabelSelector.parse("tier=back"))
    assert names(await store.list(back)) == ["default/api", "default/db", "prod/cache"]
    not_back = Scope(SERVICES, "default", LabelSelector.parse("tier!=back"))
    assert names(await store.list(not_back)) == ["default/web"]
    assert names(await store.list(Scope(ROUTES))) == ["default/web"]
    assert len((await store.list(Scope())).items) == 6
    assert everything.revision >= max(o.version for o in everything.items)


async def test_a_list_spans_several_pages(store: Store) -> None:
    # TEST_SETTINGS reads three rows or keys per round trip.
    for i in range(8):
        await store.create(key(f"s{i}"), body(f"s{i}"))
    listing = await store.list(Scope(SERVICES, "default"))
    assert [o.key.name for o in listing.items] == [f"s{i}" for i in range(8)]


async def test_watch_from_a_list_sees_every_later_change_in_order(store: Store) -> None:
    await store.create(key("before"), body("before"))
    listing = await store.list(Scope(SERVICES))
    async with await store.watch(Scope(SERVICES), listing.revision) as watch:
        created = await store.create(key("web"), body("web"))
        modified = await store.replace(key("web"), body("web", tier="x"), created.version)
        deleted = await store.delete(key("web"))
        events = await take(watch, 3)
        assert [(e.type, e.revision) for e in events] == [
            (EventType.ADDED, created.version),
            (EventType.MODIFIED, modified.version),
            (EventType.DELETED, deleted.version),
        ]
        assert events[2].object.labels == {"tier": "x"}
        assert events[2].object.body["metadata"]["resourceVersion"] == str(deleted.version)
        await nothing_more(watch)


async def test_watch_scope_filters_type_namespace_and_labels(store: Store) -> None:
    start = (await store.list(Scope())).revision
    scope = Scope(SERVICES, "prod", LabelSelector.parse("tier in (front)"))
    async with await store.watch(scope, start) as watch:
        await store.create(key("a", "default"), body("a", "default", tier="front"))
        await store.create(key("b", "prod"), body("b", "prod", tier="back"))
        await store.create(key("c", "prod", ROUTES), body("c", "prod", tier="front"))
        wanted = await store.create(key("d", "prod"), body("d", "prod", tier="front"))
        [event] = await take(watch, 1)
        assert event.object.key == key("d", "prod") and event.revision == wanted.version
        await nothing_more(watch)


async def test_watch_resumes_from_any_version_without_gap_or_repeat(store: Store) -> None:
    start = (await store.list(Scope())).revision
    writes = []
    for i in range(4):
        writes.append(await store.create(key(f"s{i}"), body(f"s{i}")))
    writes.append(await store.replace(key("s0"), body("s0", v="2")))
    writes.append(await store.delete(key("s1")))
    all_versions = [w.version for w in writes]

    async with await store.watch(Scope(SERVICES), start) as first:
        seen = [e.revision for e in await take(first, 2)]
    # Changes made while nobody watches are delivered on resume from the last version seen.
    writes.append(await store.create(key("s9"), body("s9")))
    all_versions.append(writes[-1].version)
    async with await store.watch(Scope(SERVICES), seen[-1]) as resumed:
        seen += [e.revision for e in await take(resumed, len(all_versions) - 2)]
        await nothing_more(resumed)
    assert seen == all_versions


async def test_concurrent_writers_reach_a_watch_in_revision_order(store: Store) -> None:
    start = (await store.list(Scope())).revision
    async with await store.watch(Scope(SERVICES), start) as watch:
        written = await asyncio.gather(
            *(store.create(key(f"s{i}"), body(f"s{i}")) for i in range(15))
        )
        events = await take(watch, 15)
    assert [e.revision for e in events] == sorted(w.version for w in written)


async def test_watch_resumes_after_the_store_restarts(stores: StoreFactory) -> None:
    store = await stores.open()
    before = await store.create(key("web"), body("web"))
    after_create = await store.replace(key("web"), body("web", tier="x"))
    removed = await store.delete(key("web"))
    await store.close()

    reopened = await stores.open()
    async with await reopened.watch(Scope(SERVICES), before.version) as watch:
        events = await take(watch, 2)
        assert [(e.type, e.revision) for e in events] == [
            (EventType.MODIFIED, after_create.version),
            (EventType.DELETED, removed.version),
        ]
        later = await reopened.create(key("api"), body("api"))
        [event] = await take(watch, 1)
        assert event.revision == later.version > removed.version


async def test_a_version_older_than_the_kept_history_is_expired(stores: StoreFactory) -> None:
    store = await stores.open(StoreSettings(history=5, compact_every=1, page_size=3))
    first = await store.create(key("s0"), body("s0"))
    last = first
    for i in range(1, 12):
        last = await store.create(key(f"s{i}"), body(f"s{i}"))
    with pytest.raises(ExpiredError) as expired:
        await store.watch(Scope(SERVICES), first.version)
    assert expired.value.requested == first.version
    assert expired.value.oldest is not None
    assert first.version < expired.value.oldest <= last.version - 5
    # Anything within the last `history` revisions still resumes.
    async with await store.watch(Scope(SERVICES), last.version - 5) as watch:
        events = await take(watch, 5)
    assert [e.revision for e in events][-1] == last.version


async def test_close_ends_open_watches(stores: StoreFactory) -> None:
    store = await stores.open()
    start = (await store.list(Scope())).revision
    watch = await store.watch(Scope(), start)
    waiting = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0)  # let it start waiting for an event
    await store.close()
    async with asyncio.timeout(5):
        with pytest.raises(StopAsyncIteration):
            await waiting


async def test_a_sqlite_watch_that_falls_behind_the_history_expires(tmp_path: Path) -> None:
    # sqlite only: etcd holds a slow watcher's events on the server instead of dropping them.
    sqlite = StoreFactory("sqlite", tmp_path / "store.db")
    store = await sqlite.open(StoreSettings(history=5, compact_every=1, page_size=3))
    start = (await store.list(Scope())).revision
    async with await store.watch(Scope(SERVICES), start) as watch:
        for i in range(12):
            await store.create(key(f"s{i}"), body(f"s{i}"))
        with pytest.raises(ExpiredError):
            await take(watch, 12)
    await store.close()
