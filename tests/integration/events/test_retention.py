"""Retention by time and size, and compaction by key, seen from a reader and from SQL."""

from datetime import UTC, datetime, timedelta

from gossamer.events.client import Draft, EventsClient, ReceivedEvent

from .harness import eventually

HOURS_AGO = datetime.now(UTC) - timedelta(hours=2)


async def stored(client: EventsClient, topic: str) -> list[ReceivedEvent]:
    return await client.read(topic, start="beginning", limit=10_000)


async def test_events_older_than_the_retention_time_go_away(client: EventsClient) -> None:
    await client.declare("readings", {"partitions": 2, "retention": {"time": "1h"}})
    await client.publish_batch(
        "readings", [Draft(n, key=f"k{n}", time=HOURS_AGO) for n in range(20)]
    )
    await client.publish_batch("readings", [Draft(n, key=f"k{n}") for n in range(20, 25)])

    async def only_recent() -> bool:
        return sorted(e.payload for e in await stored(client, "readings")) == [20, 21, 22, 23, 24]

    await eventually(only_recent, what="old readings expired")
    partitions = (await client.describe("readings"))["partitions"]
    assert sum(p["start"] for p in partitions) == 20  # offsets are never reused
    assert sum(p["end"] for p in partitions) == 25
    result = await client.query("SELECT count(*) FROM readings")
    assert result["rows"] == [[5]]


async def test_a_topic_over_its_size_drops_its_oldest_events(client: EventsClient) -> None:
    await client.declare("readings", {"retention": {"bytes": 2000}})
    await client.publish_batch("readings", [Draft({"n": n, "pad": "x" * 50}) for n in range(60)])

    async def within_budget() -> list[ReceivedEvent] | None:
        (partition,) = (await client.describe("readings"))["partitions"]
        return await stored(client, "readings") if partition["bytes"] <= 2000 else None

    kept = await eventually(within_budget, what="size back under 2000 bytes")
    numbers = [e.payload["n"] for e in kept]
    assert numbers == list(range(60 - len(numbers), 60))  # the newest, without a gap
    assert 0 < len(numbers) < 60


async def test_compaction_keeps_the_newest_event_of_each_key(client: EventsClient) -> None:
    await client.declare("assets", {"compaction": {"enabled": True, "minLag": "0s"}})
    for key, state in [("a1", "new"), ("a2", "new"), ("a1", "repaired"), ("a1", "retired")]:
        await client.publish("assets", {"state": state}, key=key)

    async def compacted() -> list[tuple[str | None, object]] | None:
        events = [(e.key, e.payload["state"]) for e in await stored(client, "assets")]
        return events if len(events) == 2 else None

    assert await eventually(compacted, what="compaction") == [("a2", "new"), ("a1", "retired")]
    result = await client.query("SELECT key, payload->>'state' FROM assets ORDER BY \"offset\"")
    assert result["rows"] == [["a2", "new"], ["a1", "retired"]]


async def test_compaction_leaves_events_younger_than_the_lag(client: EventsClient) -> None:
    await client.declare("assets", {"compaction": {"enabled": True, "minLag": "1h"}})
    await client.publish_batch(
        "assets",
        [
            Draft({"v": 1}, key="old", time=HOURS_AGO),
            Draft({"v": 2}, key="old", time=HOURS_AGO),
            Draft({"v": 3}, key="old"),
            Draft({"v": 1}, key="young"),
            Draft({"v": 2}, key="young"),
        ],
    )
    # SQL applies the same rule as compaction, whether or not a pass has run yet.
    result = await client.query("SELECT key, payload->>'v' FROM assets ORDER BY \"offset\"")
    assert result["rows"] == [["old", "3"], ["young", "1"], ["young", "2"]]

    async def compacted() -> list[tuple[str | None, int]] | None:
        events = [(e.key, e.payload["v"]) for e in await stored(client, "assets")]
        return events if len(events) == 3 else None

    assert await eventually(compacted, what="compaction") == [
        ("old", 3),
        ("young", 1),
        ("young", 2),
    ]
