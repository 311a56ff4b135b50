"""Store fixtures: every store test runs on sqlite and on a real etcd."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gossamer.control.store import Store, StoreSettings
from gossamer.control.store.etcd import EtcdStore
from gossamer.control.store.etcd_gateway import EtcdSettings
from gossamer.control.store.sqlite import SqliteStore

from .etcd import EtcdServer, etcd_binary

# Small pages so that lists and replays take several round trips; history trimming has its own test.
TEST_SETTINGS = StoreSettings(history=100, compact_every=1, page_size=3)


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = EtcdServer(etcd_binary(), tmp_path_factory.mktemp("etcd") / "data")
    server.start()
    yield server
    server.stop()


@dataclass
class StoreFactory:
    """Opens the test's store; opening it again is a restart (same file, same etcd prefix)."""

    backend: str
    location: Path | str
    opened: list[Store] = field(default_factory=list)

    async def open(self, settings: StoreSettings = TEST_SETTINGS) -> Store:
        store: Store
        if isinstance(self.location, Path):
            store = await SqliteStore.open(self.location, settings, synchronous="NORMAL")
        else:
            endpoint, prefix = self.location.split("|")
            store = await EtcdStore.open(EtcdSettings(endpoint, prefix), settings)
        self.opened.append(store)
        return store


@pytest.fixture(params=["sqlite", "etcd"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    if request.param == "sqlite":
        factory = StoreFactory("sqlite", tmp_path / "store.db")
    else:
        server: EtcdServer = request.getfixturevalue("etcd_server")
        factory = StoreFactory("etcd", f"{server.url}|/test-{uuid.uuid4().hex}/")
    yield factory
    for store in factory.opened:
        await store.close()


@pytest.fixture
async def store(stores: StoreFactory) -> Store:
    return await stores.open()
