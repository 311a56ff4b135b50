"""Watches over HTTP: newline-delimited events, resume without gap or repeat, 410, deadlines."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from gossamer.control.server import ControlPlane, ControlPlaneConfig, Listen

from .manifests import SERVICES, service


class EventStream:
    """The lines of one watch response, read with a deadline each."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._lines = lines

    async def take(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while len(events) < count:
                events.append(json.loads(await anext(self._lines)))
        return events

    async def rest(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Every event until the server ends the stream."""
        async with asyncio.timeout(timeout):
            return [json.loads(line) async for line in self._lines]


@asynccontextmanager
async def watching(
    client: httpx.AsyncClient, url: str = SERVICES, **params: str
) -> AsyncIterator[EventStream]:
    query = {"watch": "true", **params}
    async with client.stream("GET", url, params=query) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("application/json")
        yield EventStream(response.aiter_lines())


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"]["name"]) for e in events]


def version(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


async def eventually(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_a_watch_without_version_starts_with_the_current_objects(
    client: httpx.AsyncClient,
) -> None:
    await client.post(SERVICES, json=service("a"))
    await client.post(SERVICES, json=service("b"))
    async with watching(client) as events:
        assert summary(await events.take(2)) == [("ADDED", "a"), ("ADDED", "b")]
        await client.delete(f"{SERVICES}/a")
        assert summary(await events.take(1)) == [("DELETED", "a")]


async def test_a_watch_streams_every_change_after_a_version(client: httpx.AsyncClient) -> None:
    start = (await client.get(SERVICES)).json()["metadata"]["resourceVersion"]
    async with watching(client, resourceVersion=start) as events:
        created = (await client.post(SERVICES, json=service("web"))).json()
        patch = {"metadata": {"labels": {"x": "1"}}}
        headers = {"Content-Type": "application/merge-patch+json"}
        await client.patch(f"{SERVICES}/web", json=patch, headers=headers)
        await client.delete(f"{SERVICES}/web")
        received = await events.take(3)
    assert summary(received) == [("ADDED", "web"), ("MODIFIED", "web"), ("DELETED", "web")]
    assert received[0]["object"] == created
    assert received[2]["object"]["metadata"]["labels"] == {"x": "1"}
    versions = [version(e["object"]) for e in received]
    assert versions == sorted(versions) and versions[0] > int(start)


async def test_a_watch_resumes_from_the_last_version_seen_without_gap_or_repeat(
    client: httpx.AsyncClient,
) -> None:
    start = (await client.get(SERVICES)).json()["metadata"]["resourceVersion"]
    written = []
    for name in ("a", "b", "c"):
        written.append((await client.post(SERVICES, json=service(name))).json())
    async with watching(client, resourceVersion=start) as events:
        first = await events.take(2)
    for name in ("d", "e"):
        written.append((await client.post(SERVICES, json=service(name))).json())
    last_seen = str(version(first[-1]["object"]))
    async with watching(client, resourceVersion=last_seen, timeoutSeconds="1") as events:
        second = await events.rest()
    seen = [version(e["object"]) for e in first + second]
    assert seen == [version(w) for w in written]


async def test_a_watch_filters_by_label_selector(client: httpx.AsyncClient) -> None:
    start = (await client.get(SERVICES)).json()["metadata"]["resourceVersion"]
    async with watching(client, resourceVersion=start, labelSelector="tier=front") as events:
        await client.post(SERVICES, json=service("db", tier="back"))
        await client.post(SERVICES, json=service("web", tier="front"))
        assert summary(await events.take(1)) == [("ADDED", "web")]


async def test_a_version_older_than_the_history_is_410_gone(client: httpx.AsyncClient) -> None:
    first = (await client.post(SERVICES, json=service("s0"))).json()
    # The fixture keeps 20 revisions of history.
    for i in range(1, 25):
        await client.post(SERVICES, json=service(f"s{i}"))
    gone = await client.get(
        SERVICES, params={"watch": "true", "resourceVersion": str(version(first))}
    )
    assert gone.status_code == 410
    assert gone.json()["reason"] == "Expired"
    assert "list again" in gone.json()["message"]


async def test_timeout_seconds_ends_the_stream(client: httpx.AsyncClient) -> None:
    began = time.monotonic()
    async with watching(client, timeoutSeconds="1") as events:
        assert await events.rest() == []
    assert 0.9 < time.monotonic() - began < 5


async def test_a_client_that_hangs_up_releases_its_watch(
    plane: ControlPlane, client: httpx.AsyncClient
) -> None:
    assert plane.endpoints is not None
    # The control plane's own mirror of the store holds one watch of its own.
    before = repr(plane.store)
    async with watching(client):
        await eventually(lambda: plane.endpoints.watch_streams == 1)
    await eventually(lambda: plane.endpoints.watch_streams == 0)
    assert repr(plane.store) == before


async def test_stopping_the_control_plane_ends_open_watches_promptly(tmp_path: Path) -> None:
    # A grace period far longer than the bound below: only ending watches can stop in time.
    config = ControlPlaneConfig(
        state_dir=tmp_path, listen=Listen("127.0.0.1", 0), graceful_s=30.0, tls=False
    )
    plane = ControlPlane(config)
    await plane.start()
    headers = {"Authorization": f"Bearer {plane.token_file.read_text().strip()}"}
    async with (
        httpx.AsyncClient(base_url=plane.url, headers=headers) as client,
        watching(client) as events,
    ):
        began = time.monotonic()
        await plane.stop()
        assert await events.rest() == []
    assert time.monotonic() - began < 10.0
