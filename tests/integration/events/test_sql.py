"""SQL over history: the source note's question, JSON access, formats, and every bound."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import duckdb
import httpx
import pytest

from gossamer.events.client import BrokerError, Draft, EventsClient
from gossamer.events.server import BrokerServer, Listen
from gossamer.events.service import BrokerService, ServiceConfig
from gossamer.events.sql import QuerySettings

from .harness import eventually

# The query docs/events.md shows for "how many users were added last month".
USERS_ADDED_LAST_MONTH = """
SELECT count(*) AS users_added FROM users
WHERE type = 'UserAdded'
  AND time >= date_trunc('month', now()) - INTERVAL 1 MONTH
  AND time <  date_trunc('month', now())
"""


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def test_how_many_users_were_added_last_month_is_one_query(client: EventsClient) -> None:
    await client.declare("users", {"partitions": 3})
    this_month = month_start(datetime.now(UTC))
    last_month = month_start(this_month - timedelta(days=1))
    before = month_start(last_month - timedelta(days=1))

    def added(user: str, when: datetime) -> Draft:
        return Draft({"userId": user}, key=user, type="UserAdded", time=when)

    await client.publish_batch(
        "users",
        [
            added("u1", last_month),  # the first millisecond of last month counts
            added("u2", last_month + timedelta(days=9)),
            added("u3", this_month - timedelta(milliseconds=1)),
            added("u4", this_month),  # this month: no
            added("u5", before),  # the month before: no
            Draft({"userId": "u2"}, key="u2", type="UserDeleted", time=last_month),
        ],
    )
    result = await client.query(USERS_ADDED_LAST_MONTH)
    assert result["columns"] == ["users_added"]
    assert result["rows"] == [[3]]


async def test_each_topic_is_a_table_with_json_payloads(client: EventsClient) -> None:
    await client.declare("users", {"partitions": 2})
    await client.declare("users-dead-letter", {})
    await client.publish(
        "users", {"userId": "u1", "plan": {"tier": "gold"}}, key="u1", type="UserAdded"
    )
    await client.publish("users-dead-letter", {"bad": True})
    result = await client.query(
        "SELECT partition, key, type, payload->>'$.plan.tier' AS tier, "
        "headers->>'traceparent' IS NOT NULL AS traced FROM users"
    )
    assert result["rows"][0][1:] == ["u1", "UserAdded", "gold", True]
    dead = await client.query("SELECT count(*) FROM users_dead_letter")
    assert dead["rows"] == [[1]]
    columns = await client.query("SELECT * FROM users LIMIT 0")
    assert columns["columns"] == [
        "offset", "partition", "id", "key", "type", "time", "headers", "payload", "data"
    ]  # fmt: skip
    assert columns["types"][5] == "TIMESTAMP WITH TIME ZONE"
    assert columns["types"][7:] == ["JSON", "VARIANT"]


async def test_payload_fields_are_typed_in_data(client: EventsClient) -> None:
    await client.declare("readings", {"partitions": 2})
    await client.publish_batch(
        "readings",
        [
            *(Draft({"value": v, "sensor": {"id": f"s{v}"}}, key=f"k{v}") for v in (1.5, 2.5, 5)),
            Draft("not an object"),
            Draft(None),
        ],
    )
    result = await client.query(
        "SELECT avg(data.value::DOUBLE), count(data.value), "
        "list(data.sensor.id::VARCHAR ORDER BY data.value::DOUBLE) "
        "FILTER (WHERE data.sensor IS NOT NULL) FROM readings"
    )
    assert result["rows"] == [[3.0, 3, ["s1.5", "s2.5", "s5"]]]
    # The same value as the JSON text; a whole `data` comes back as plain JSON data.
    same = await client.query(
        "SELECT data, payload FROM readings WHERE data.value::DOUBLE = 5 "
        "AND (payload->>'value')::DOUBLE = 5"
    )
    assert same["types"] == ["VARIANT", "JSON"]
    assert same["rows"] == [[{"value": 5, "sensor": {"id": "s5"}}] * 2]


async def test_results_come_as_csv(client: EventsClient) -> None:
    await client.declare("users", {})
    await client.publish("users", {"userId": "u1"}, type="UserAdded")
    text = await client.query("SELECT type, payload FROM users", output="csv")
    assert text == 'type,payload\nUserAdded,"{""userId"": ""u1""}"\n'


async def test_history_is_read_only_and_sees_no_files(broker: BrokerServer) -> None:
    async with httpx.AsyncClient(base_url=broker.url) as http:
        await http.put("/topics/users", json={})
        for sql, reason in [
            ("DELETE FROM users", "history is read-only: only SELECT queries run here, not DELETE"),
            ("SELECT * FROM read_text('/etc/passwd')", "Permission Error"),
            ("SELECT 1; SELECT 2", "one statement per query, not 2"),
        ]:
            reply = await http.post("/query", json={"sql": sql})
            assert reply.status_code == 400
            assert reason in reply.json()["error"]


async def test_a_topic_query_sees_only_that_topic(client: EventsClient) -> None:
    await client.declare("users", {})
    await client.declare("assets", {})
    assert (await client.query("SELECT count(*) FROM users", topic="users"))["rows"] == [[0]]
    with pytest.raises(BrokerError, match="assets does not exist"):
        await client.query("SELECT count(*) FROM assets", topic="users")


def bounded(config: ServiceConfig, query: QuerySettings) -> BrokerServer:
    return BrokerServer(
        BrokerService(replace(config, query=query)), Listen("127.0.0.1", 0), graceful_s=1
    )


async def test_a_query_past_its_time_bound_is_stopped(config: ServiceConfig) -> None:
    async with (
        bounded(config, QuerySettings(timeout_s=0.3)) as broker,
        EventsClient(broker.url) as client,
    ):
        with pytest.raises(BrokerError) as caught:
            await client.query("SELECT count(*) FROM range(100000000000) a, range(10) b")
    assert caught.value.status == 408
    assert caught.value.reason == "the query ran longer than 0.3s and was stopped"


async def test_a_query_past_its_memory_bound_fails_cleanly(config: ServiceConfig) -> None:
    async with (
        bounded(config, QuerySettings(memory_limit="64MB")) as broker,
        EventsClient(broker.url) as client,
    ):
        with pytest.raises(BrokerError, match="Out of Memory"):
            await client.query("SELECT list(range) FROM range(100000000)")


async def test_rows_past_the_bound_are_cut_and_said_so(config: ServiceConfig) -> None:
    async with (
        bounded(config, QuerySettings(max_rows=5)) as broker,
        EventsClient(broker.url) as client,
    ):
        result = await client.query("SELECT * FROM range(10)")
    assert len(result["rows"]) == 5
    assert result["truncated"] is True


async def test_history_merges_small_segments_and_stays_right(
    broker: BrokerServer, client: EventsClient
) -> None:
    await client.declare("users", {})
    for n in range(6):  # each query seals the tail: one small segment each
        await client.publish("users", n)
        assert (await client.query("SELECT count(*) FROM users"))["rows"] == [[n + 1]]
    history = broker.service.history

    async def merged() -> bool:
        return len(history.segments("users", 0)) < 6

    await eventually(merged, what="small segments merged")
    result = await client.query('SELECT list(payload::INT ORDER BY "offset") FROM users')
    assert result["rows"] == [[[0, 1, 2, 3, 4, 5]]]


async def test_history_of_an_older_layout_is_sealed_again_from_the_log(
    config: ServiceConfig,
) -> None:
    history = config.data_dir / "history"
    async with (
        BrokerServer(BrokerService(config), Listen("127.0.0.1", 0), graceful_s=1) as broker,
        EventsClient(broker.url) as client,
    ):
        await client.declare("users", {"partitions": 2})
        await client.publish_batch("users", [Draft({"n": n}, key=f"u{n}") for n in range(4)])
        assert (await client.query("SELECT count(*) FROM users"))["rows"] == [[4]]
    # What an earlier version left: segments without `data`, and no layout file.
    segments = sorted(history.rglob("*.parquet"))
    assert segments
    for path in segments:
        with duckdb.connect() as conn:
            conn.execute(
                f"COPY (SELECT * EXCLUDE (data) FROM read_parquet('{path}')) TO '{path}.old'"
            )
        path.with_name(path.name + ".old").replace(path)
    (history / "layout.txt").unlink()
    async with (
        BrokerServer(BrokerService(config), Listen("127.0.0.1", 0), graceful_s=1) as broker,
        EventsClient(broker.url) as client,
    ):
        result = await client.query("SELECT count(*), sum(data.n::INT) FROM users")
        assert result["rows"] == [[4, 6]]


async def test_history_survives_a_restart(config: ServiceConfig) -> None:
    for expected in (3, 6):
        async with (
            BrokerServer(BrokerService(config), Listen("127.0.0.1", 0), graceful_s=1) as broker,
            EventsClient(broker.url) as client,
        ):
            await client.declare("users", {})
            await client.publish_batch("users", [Draft(n) for n in range(3)])
            assert (await client.query("SELECT count(*) FROM users"))["rows"] == [[expected]]
