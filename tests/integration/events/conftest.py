"""Real brokers on real sockets for the event backbone's tests, in-process or as a subprocess."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from gossamer.events.client import EventsClient
from gossamer.events.server import BrokerServer, Listen
from gossamer.events.service import BrokerService, ServiceConfig

from .harness import Backend, BrokerProcess, NatsServer, PostgresServer, fast_config


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = NatsServer(tmp_path_factory.mktemp("nats") / "store")
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> str:
    """A new database on the session's PostgreSQL server: its connection string."""
    return postgres_server.database()


@pytest.fixture(params=["sqlite", "jetstream"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Every test that starts a broker runs against both logs."""
    if request.param == "sqlite":
        return Backend("sqlite")
    url = request.getfixturevalue("nats_server")
    return Backend("jetstream", url, prefix=f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture
def config(tmp_path: Path, backend: Backend) -> ServiceConfig:
    return fast_config(tmp_path / "broker", backend)


@pytest.fixture
async def broker(config: ServiceConfig) -> AsyncIterator[BrokerServer]:
    server = BrokerServer(BrokerService(config), Listen("127.0.0.1", 0), graceful_s=1.0)
    async with server:
        yield server


@pytest.fixture
async def client(broker: BrokerServer) -> AsyncIterator[EventsClient]:
    async with EventsClient(broker.url) as events:
        yield events


@pytest.fixture
def broker_process(tmp_path: Path, backend: Backend) -> Iterator[Callable[..., BrokerProcess]]:
    started: list[BrokerProcess] = []

    def start(data_dir: Path | None = None, *args: str) -> BrokerProcess:
        process = BrokerProcess(data_dir or tmp_path / "broker", backend, *args)
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
