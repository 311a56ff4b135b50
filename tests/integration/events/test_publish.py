"""Publishing over HTTP: what is stored, where, and the precise refusals a publisher sees."""

import httpx
import pytest

from gossamer.events.client import BrokerError, Draft, EventsClient, SchemaError
from gossamer.events.server import BrokerServer

USER_SCHEMA = {
    "type": "object",
    "required": ["userId"],
    "properties": {"userId": {"type": "string"}, "email": {"type": "string"}},
}


async def test_a_published_event_reads_back_whole(client: EventsClient) -> None:
    await client.declare("users", {"partitions": 3})
    sent = await client.publish(
        "users", {"userId": "u1"}, key="u1", type="UserAdded", headers={"source": "test"}
    )
    (got,) = await client.read("users", partition=sent.partition, offset=sent.offset, limit=1)
    assert (got.id, got.key, got.type, got.payload) == (
        sent.id,
        "u1",
        "UserAdded",
        {"userId": "u1"},
    )
    assert got.headers["source"] == "test"
    assert got.trace_context is not None  # added by the client


async def test_events_of_one_key_share_a_partition_in_publish_order(client: EventsClient) -> None:
    await client.declare("users", {"partitions": 4})
    sent = [await client.publish("users", {"n": n}, key="u7") for n in range(5)]
    assert len({s.partition for s in sent}) == 1
    assert [s.offset for s in sent] == list(range(5))
    got = await client.read("users", partition=sent[0].partition, offset=0, limit=10)
    assert [e.payload["n"] for e in got] == list(range(5))


async def test_a_batch_is_stored_in_order(client: EventsClient) -> None:
    await client.declare("users", {"partitions": 1})
    results = await client.publish_batch("users", [Draft({"n": n}) for n in range(50)])
    assert [r.offset for r in results] == list(range(50))


async def test_publishing_an_id_again_stores_it_once(client: EventsClient) -> None:
    await client.declare("users", {"partitions": 2})
    first = await client.publish("users", {"v": 1}, id="evt-1", key="k")
    again = await client.publish("users", {"v": 2}, id="evt-1", key="k")
    assert not first.duplicate
    assert again.duplicate
    assert (again.partition, again.offset) == (first.partition, first.offset)
    stored = await client.read("users", start="beginning", limit=10)
    assert [(e.id, e.payload) for e in stored] == [("evt-1", {"v": 1})]


async def test_a_schema_violation_is_a_422_naming_the_field(broker: BrokerServer) -> None:
    async with httpx.AsyncClient(base_url=broker.url) as http:
        await http.put("/topics/users", json={"schema": USER_SCHEMA})
        reply = await http.post("/topics/users/publish", json={"payload": {"email": 5}})
    assert reply.status_code == 422
    assert reply.headers["x-gossamer-reason"] == "payload.email: 5 is not of type 'string'"
    assert reply.json()["violations"] == [
        {"index": 0, "path": "payload.email", "message": "5 is not of type 'string'"},
        {"index": 0, "path": "payload.userId", "message": "'userId' is a required property"},
    ]


async def test_a_batch_with_one_bad_payload_stores_nothing(client: EventsClient) -> None:
    await client.declare("users", {"schema": USER_SCHEMA})
    batch = [Draft({"userId": "a"}), Draft({"userId": "b"}), Draft({"userId": 3})]
    with pytest.raises(SchemaError) as caught:
        await client.publish_batch("users", batch)
    assert caught.value.violations[0]["index"] == 2
    assert caught.value.violations[0]["path"] == "payload.userId"
    assert await client.read("users", start="beginning") == []


@pytest.mark.parametrize(
    ("path", "body", "status", "reason"),
    [
        ("/topics/nope/publish", {"payload": 1}, 404, "no topic named nope"),
        ("/topics/t/publish", {"payload": 1, "kye": "x"}, 400, "kye: unknown field"),
        ("/topics/t/publish", {"events": [{"payload": 1}, {}]}, 400, "events[1].payload: required"),
        ("/topics/t/publish", {"events": [{"payload": 1}] * 1001}, 413, "1001 events in one batch"),
        ("/topics/t/publish", {"events": []}, 400, "no events to publish"),
        ("/topics/compacted/publish", {"payload": 1}, 400, "key: required: topic compacted"),
    ],
)
async def test_refusals_say_why(
    broker: BrokerServer, path: str, body: object, status: int, reason: str
) -> None:
    async with httpx.AsyncClient(base_url=broker.url) as http:
        await http.put("/topics/t", json={})
        await http.put("/topics/compacted", json={"compaction": {"enabled": True}})
        reply = await http.post(path, json=body)
    assert reply.status_code == status
    assert reply.headers["x-gossamer-reason"].startswith(reason)


async def test_a_body_that_is_not_json_is_a_400(broker: BrokerServer) -> None:
    async with httpx.AsyncClient(base_url=broker.url) as http:
        await http.put("/topics/t", json={})
        reply = await http.post("/topics/t/publish", content=b"{not json")
    assert reply.status_code == 400
    assert reply.json()["error"].startswith("the body is not JSON")


async def test_a_bad_topic_spec_is_refused_with_its_field(client: EventsClient) -> None:
    with pytest.raises(BrokerError) as caught:
        await client.declare("users", {"partitions": 2000})
    assert caught.value.status == 400
    assert caught.value.reason == "spec.partitions: must be between 1 and 1024, not 2000"


async def test_partitions_can_grow_but_not_shrink(client: EventsClient) -> None:
    await client.declare("users", {"partitions": 2})
    await client.declare("users", {"partitions": 4})
    assert len((await client.describe("users"))["partitions"]) == 4
    with pytest.raises(BrokerError, match="partitions can be added but not removed"):
        await client.declare("users", {"partitions": 1})


async def test_topics_are_listed_with_their_size(client: EventsClient) -> None:
    await client.declare("users", {"partitions": 2, "description": "people"})
    await client.declare("assets", {})
    await client.publish("users", {"userId": "u1"}, key="u1")
    topics = {t["name"]: t for t in await client.topics()}
    assert sorted(topics) == ["assets", "users"]
    assert topics["users"]["offsets"] == 1
    assert topics["users"]["description"] == "people"
    assert topics["users"]["bytes"] > 0
