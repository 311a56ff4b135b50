"""Consumer groups over HTTP: assignment, rebalancing, at-least-once, sessions, dead letters."""

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import pytest

from gossamer.events.client import (
    Draft,
    EventsClient,
    ReceivedEvent,
    Subscription,
    SubscriptionEnded,
)
from gossamer.events.groups import GroupSettings
from gossamer.events.model import partition_for
from gossamer.events.server import BrokerServer, Listen
from gossamer.events.service import BrokerService, ServiceConfig

from .harness import eventually


async def take(sub: Subscription, count: int, timeout: float = 10.0) -> list[ReceivedEvent]:
    """The next `count` events of a subscription, within a deadline."""
    got: list[ReceivedEvent] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got.append(await anext(sub))
    return got


async def assigned(sub: Subscription, partitions: tuple[int, ...]) -> None:
    """Wait until the member's assignment is `partitions` (events meanwhile are kept)."""
    async with asyncio.timeout(10):
        while sub.partitions != partitions:
            await sub.assignment()


def key_for(partition: int, partitions: int) -> str:
    """A key that the broker places on `partition`."""
    return next(k for n in range(1000) if partition_for(k := f"k{n}", "", partitions) == partition)


async def publish_keys(client: EventsClient, topic: str, count: int) -> None:
    await client.publish_batch(topic, [Draft({"n": n}, key=f"k{n}") for n in range(count)])


async def test_members_share_partitions_and_each_event_goes_to_one(client: EventsClient) -> None:
    await client.declare("orders", {"partitions": 4})
    async with (
        client.subscribe("orders", "billing", member="a", from_beginning=True) as a,
        client.subscribe("orders", "billing", member="b", from_beginning=True) as b,
    ):
        await assigned(a, (0, 1))
        await assigned(b, (2, 3))
        await publish_keys(client, "orders", 40)
        seen: list[ReceivedEvent] = []

        async def drain(sub: Subscription) -> None:
            while True:
                event = await anext(sub)
                seen.append(event)
                await sub.ack(event)

        tasks = [asyncio.create_task(drain(s)) for s in (a, b)]
        await eventually(lambda: _at_least(seen, 40), what="40 events delivered")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert sorted(e.payload["n"] for e in seen) == list(range(40))
        assert {e.partition for e in seen} == {0, 1, 2, 3}
    lag = await client.lag("orders", "billing")
    assert lag[0]["lag"] == 0


async def test_unacked_events_of_a_member_that_leaves_go_to_the_next(client: EventsClient) -> None:
    await client.declare("orders", {"partitions": 1})
    await publish_keys(client, "orders", 10)
    async with client.subscribe("orders", "g", member="a", from_beginning=True) as a:
        first = await take(a, 10)
        for event in first[:4]:
            await a.ack(event)
    # `a` left with events 4..9 unacknowledged: the next member starts at the commit.
    async with client.subscribe("orders", "g", member="b") as b:
        again = await take(b, 6)
    assert [e.offset for e in again] == [4, 5, 6, 7, 8, 9]
    # Only the oldest unacknowledged event was being handled when `a` left: it counts twice.
    assert [e.deliveries for e in again] == [2, 1, 1, 1, 1, 1]


async def test_a_member_joining_takes_partitions_from_a_busy_one(client: EventsClient) -> None:
    await client.declare("orders", {"partitions": 2})
    async with client.subscribe("orders", "g", member="a", from_beginning=True) as a:
        await assigned(a, (0, 1))
        async with client.subscribe("orders", "g", member="b") as b:
            await assigned(b, (1,))
            await assigned(a, (0,))
            key = key_for(0, 2)
            await client.publish_batch("orders", [Draft(n, key=key) for n in range(3)])
            on_zero = await take(a, 3)
        await assigned(a, (0, 1))
    assert {e.partition for e in on_zero} == {0}


async def test_a_member_that_stops_heartbeating_loses_its_partitions(config: ServiceConfig) -> None:
    groups = GroupSettings(session_timeout_s=0.6, keepalive_s=0.1, retry_backoff_s=0.01)
    config = replace(config, broker=replace(config.broker, groups=groups))
    async with (
        BrokerServer(BrokerService(config), Listen("127.0.0.1", 0), graceful_s=1) as broker,
        EventsClient(broker.url) as client,
    ):
        await client.declare("orders", {"partitions": 2})
        async with (
            client.subscribe("orders", "g", member="stuck", heartbeat_s=3600) as stuck,
            client.subscribe("orders", "g", member="alive", heartbeat_s=0.1) as alive,
        ):
            with pytest.raises(SubscriptionEnded, match="session timed out: no heartbeat"):
                await take(stuck, 1, timeout=5)
            await assigned(alive, (0, 1))


async def test_an_ack_for_a_partition_that_moved_is_refused(broker: BrokerServer) -> None:
    async with EventsClient(broker.url) as client:
        await client.declare("orders", {"partitions": 2})
        await client.publish("orders", "moving", key=key_for(1, 2))
        async with client.subscribe("orders", "g", member="a", from_beginning=True) as a:
            (event,) = await take(a, 1)
            assert event.partition == 1
            async with client.subscribe("orders", "g", member="b") as b:
                await assigned(a, (0,))
                await assigned(b, (1,))
                async with httpx.AsyncClient(base_url=broker.url) as http:
                    reply = await http.post(
                        "/topics/orders/groups/g/ack",
                        json={"member": "a", "acks": [{"partition": 1, "offset": event.offset}]},
                    )
                assert reply.json()["rejected"] == [{"partition": 1, "offset": 0}]
                (redelivered,) = await take(b, 1)
                assert redelivered.id == event.id
                assert redelivered.deliveries == 2


async def test_a_failing_event_is_retried_then_dead_lettered(client: EventsClient) -> None:
    await client.declare("users-dlq", {})
    spec = {"partitions": 1, "deadLetter": {"topic": "users-dlq", "maxDeliveries": 3}}
    await client.declare("users", spec)
    await client.publish_batch(
        "users", [Draft({"ok": True}), Draft({"poison": True}), Draft({"ok": True})]
    )
    handled: list[int] = []
    poison: list[int] = []
    async with client.subscribe("users", "mailer", from_beginning=True) as sub:
        while len(handled) < 2 or len(poison) < 3:
            (event,) = await take(sub, 1)
            if event.payload.get("poison"):
                poison.append(event.deliveries)
                await sub.nack(event, "cannot parse the address")
            else:
                handled.append(event.offset)
                await sub.ack(event)
    assert poison == [1, 2, 3]
    (letter,) = await client.read("users-dlq", start="beginning")
    assert letter.payload == {"poison": True}
    assert letter.headers["gossamer-dead-letter-reason"] == "cannot parse the address"
    assert letter.headers["gossamer-dead-letter-deliveries"] == "3"
    assert letter.headers["gossamer-dead-letter-offset"] == "1"
    assert handled == [0, 2]
    assert (await client.lag("users", "mailer"))[0]["lag"] == 0


async def test_an_event_that_kills_its_consumers_is_dead_lettered(client: EventsClient) -> None:
    # The dead-letter topic is not declared: the broker creates it.
    await client.declare("users", {"deadLetter": {"topic": "users-dlq", "maxDeliveries": 2}})
    assert (await client.describe("users-dlq"))["spec"]["description"] == "dead letters of users"
    await client.publish_batch("users", [Draft({"poison": True}), Draft({"ok": True})])
    for _ in range(2):  # a consumer receives it and dies before acknowledging
        async with client.subscribe("users", "g", from_beginning=True) as sub:
            (event,) = await take(sub, 1)
            assert event.payload == {"poison": True}
    async with client.subscribe("users", "g") as sub:
        (event,) = await take(sub, 1)
        assert event.payload == {"ok": True}
    (letter,) = await client.read("users-dlq", start="beginning")
    assert letter.headers["gossamer-dead-letter-reason"] == "not acknowledged after 2 deliveries"


async def test_a_new_group_starts_at_the_end_unless_told_otherwise(client: EventsClient) -> None:
    await client.declare("orders", {})
    await client.publish("orders", "old")
    async with client.subscribe("orders", "late") as late:
        await assigned(late, (0,))
        await client.publish("orders", "new")
        (event,) = await take(late, 1)
    assert event.payload == "new"
    async with client.subscribe("orders", "early", from_beginning=True) as early:
        events = await take(early, 2)
    assert [e.payload for e in events] == ["old", "new"]


async def test_seek_replays_from_the_beginning_or_a_time(client: EventsClient) -> None:
    await client.declare("orders", {})
    sent = [await client.publish("orders", n) for n in range(5)]
    (third,) = await client.read("orders", partition=0, offset=sent[2].offset, limit=1)
    async with client.subscribe("orders", "g", from_beginning=True) as sub:
        for event in await take(sub, 5):
            await sub.ack(event)
        assert await client.seek("orders", "g", to="beginning") == {0: 0}
        assert [e.payload for e in await take(sub, 5)] == [0, 1, 2, 3, 4]
        moment = datetime.fromtimestamp(third.time_ms / 1000, UTC)
        committed = await client.seek("orders", "g", to=moment)
        assert committed[0] <= 2
        replay = await take(sub, 5 - committed[0])
        assert replay[-1].payload == 4


async def test_lag_counts_what_a_group_has_not_committed(client: EventsClient) -> None:
    await client.declare("orders", {"partitions": 1})
    await publish_keys(client, "orders", 10)
    async with client.subscribe("orders", "g", from_beginning=True) as sub:
        for event in (await take(sub, 10))[:4]:
            await sub.ack(event)
        (lag,) = await client.lag("orders", "g")
        assert lag["lag"] == 6
        assert lag["members"] == 1
        assert lag["partitions"] == [{"partition": 0, "committed": 4, "end": 10, "lag": 6}]


async def _at_least(items: list[ReceivedEvent], count: int) -> bool:
    return len(items) >= count
