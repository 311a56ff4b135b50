"""Crashes: kill -9 of the broker mid-publish, and of a consumer mid-batch."""

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from gossamer.events.client import BrokerError, ClientTimeouts, Draft, EventsClient, ReceivedEvent
from gossamer.events.model import partition_for
from gossamer.events.server import BrokerServer

from .harness import BrokerProcess, eventually

TOPICS = """\
apiVersion: gossamer.dev/v1alpha1
kind: Topic
metadata: {name: orders}
spec: {partitions: 3}
"""

# A consumer that handles each event (2 ms of work), acks it, then says so.
CONSUMER = """\
import asyncio, sys
from gossamer.events.client import EventsClient

async def main(url, topic, group):
    async with EventsClient(url) as client:
        async with client.subscribe(topic, group, member="doomed") as events:
            async for event in events:
                await asyncio.sleep(0.002)
                await events.ack(event)
                print("done", event.partition, event.offset, flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


async def read_all(client: EventsClient, topic: str) -> list[ReceivedEvent]:
    return await client.read(topic, start="beginning", limit=1_000_000)


async def test_every_acknowledged_event_survives_kill_9_and_is_stored_once(
    tmp_path: Path, broker_process: Callable[..., BrokerProcess]
) -> None:
    manifest = tmp_path / "topics.yaml"
    manifest.write_text(TOPICS)
    data = tmp_path / "data"
    first = broker_process(data, "-f", str(manifest))
    attempted: dict[str, Draft] = {}
    acked: dict[str, tuple[int, int]] = {}
    timeouts = ClientTimeouts(connect=2, read=5)
    async with EventsClient(first.url, timeouts=timeouts) as client:
        early = await client.publish_batch("orders", [Draft(n, key=f"k{n}") for n in range(30)])
        async with client.subscribe("orders", "billing", from_beginning=True) as events:
            seen = 0
            async for event in events:
                await events.ack(event)
                seen += 1
                if seen == 30:
                    break
        committed = {p["partition"]: p["committed"] for p in (await client.lag())[0]["partitions"]}

        async def publisher(number: int) -> None:
            for batch in range(1_000_000):
                drafts = [
                    Draft(
                        {"publisher": number, "batch": batch},
                        key=f"k{j}",
                        id=f"{number}-{batch}-{j}",
                    )
                    for j in range(5)
                ]
                attempted.update((d.id, d) for d in drafts if d.id)
                try:
                    results = await client.publish_batch("orders", drafts)
                except (httpx.HTTPError, BrokerError):
                    return
                acked.update((r.id, (r.partition, r.offset)) for r in results)

        publishers = [asyncio.create_task(publisher(n)) for n in range(8)]
        await eventually(lambda: _more_than(acked, 500), what="500 events acknowledged")
        first.kill()
        await asyncio.wait_for(asyncio.gather(*publishers), 30)

    second = broker_process(data, "-f", str(manifest))
    async with EventsClient(second.url) as client:
        stored = {e.id: e for e in await read_all(client, "orders")}
        assert len(stored) == len(await read_all(client, "orders"))  # no id twice
        assert set(acked) <= set(stored), "an acknowledged event was lost"
        for event_id, place in acked.items():
            assert (stored[event_id].partition, stored[event_id].offset) == place
        # A group's commits survive too, and it resumes exactly there.
        (lag,) = await client.lag("orders", "billing")
        assert {p["partition"]: p["committed"] for p in lag["partitions"]} == committed
        # Publishers retry what got no answer; what had been stored is not stored again.
        unanswered = [d for event_id, d in attempted.items() if event_id not in acked]
        assert unanswered, "the kill should interrupt requests in flight"
        retried = await client.publish_batch("orders", unanswered)
        assert {r.id for r in retried if r.duplicate} == {d.id for d in unanswered} & set(stored)
        final = await read_all(client, "orders")
        assert sorted(e.id for e in final) == sorted([*attempted, *(e.id for e in early)])
        for partition in range(3):
            offsets = [e.offset for e in final if e.partition == partition]
            assert offsets == list(range(len(offsets)))


async def test_a_consumer_killed_mid_batch_hands_its_partition_over_at_the_commit(
    broker: BrokerServer, tmp_path: Path
) -> None:
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)
    async with EventsClient(broker.url) as client:
        await client.declare("orders", {"partitions": 2})
        async with client.subscribe("orders", "g", member="survivor", from_beginning=True) as b:
            await _assignment(b, (0, 1))
            doomed = await asyncio.create_subprocess_exec(
                sys.executable, str(script), broker.url, "orders", "g",
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                await _assignment(b, (0,))
                key = next(k for n in range(100) if partition_for(k := f"k{n}", "", 2) == 1)
                await client.publish_batch("orders", [Draft(n, key=key) for n in range(400)])
                done = await _lines_until(doomed, 50)
            finally:
                doomed.kill()
                await doomed.wait()
            await _assignment(b, (0, 1))
            first = await asyncio.wait_for(anext(b), 10)
            (lag,) = await client.lag("orders", "g")
            committed = lag["partitions"][1]["committed"]
            # The survivor starts exactly at the commit, which the dead member had moved to
            # just past its last acknowledged event (or one further, if it died after its ack
            # reached the broker and before it could print).
            assert first.partition == 1
            assert first.offset == committed
            assert committed in (done[-1] + 1, done[-1] + 2)
            rest = [first]
            while rest[-1].offset < 399:
                await b.ack(rest[-1])
                rest.append(await asyncio.wait_for(anext(b), 10))
            assert [e.offset for e in rest] == list(range(committed, 400))


async def _assignment(sub: object, partitions: tuple[int, ...]) -> None:
    async with asyncio.timeout(10):
        while sub.partitions != partitions:  # type: ignore[attr-defined]
            await sub.assignment()  # type: ignore[attr-defined]


async def _lines_until(process: asyncio.subprocess.Process, count: int) -> list[int]:
    """Offsets the consumer reported done, once it has reported `count` of them."""
    assert process.stdout is not None
    done: list[int] = []
    async with asyncio.timeout(20):
        while len(done) < count:
            line = (await process.stdout.readline()).decode().split()
            assert line[:1] == ["done"], line
            done.append(int(line[2]))
    assert done == list(range(len(done)))
    return done


async def _more_than(items: dict[str, tuple[int, int]], count: int) -> bool:
    return len(items) > count
