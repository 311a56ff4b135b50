"""Events: ids, times, stable partitioning and the checks on what publishers send."""

import json
import uuid

import pytest

from gossamer.events.errors import InvalidEventError
from gossamer.events.model import (
    Event,
    EventLimits,
    format_time,
    new_event_from_json,
    new_event_id,
    parse_time,
    partition_for,
)


def test_partition_is_a_documented_hash_of_the_key_so_other_languages_can_compute_it() -> None:
    # int.from_bytes(blake2b(b"user-42", digest_size=8).digest(), "big") % 3 == 0, % 8 == 6
    assert partition_for("user-42", "ignored", 3) == 0
    assert partition_for("user-42", "ignored", 8) == 6
    assert {partition_for("user-42", str(i), 5) for i in range(20)} == {
        partition_for("user-42", "x", 5)
    }


def test_similar_keys_spread_over_partitions() -> None:
    assert {partition_for(f"k{n}", "", 2) for n in range(4)} == {0, 1}


def test_events_without_a_key_spread_by_id() -> None:
    spread = {partition_for(None, new_event_id(), 4) for _ in range(200)}
    assert spread == {0, 1, 2, 3}


def test_ids_are_uuid7_and_sort_by_time() -> None:
    early, late = new_event_id(1_000_000), new_event_id(2_000_000)
    assert uuid.UUID(early).version == 7
    assert early < late


def test_times_are_rfc3339_utc_with_milliseconds() -> None:
    assert format_time(0) == "1970-01-01T00:00:00.000Z"
    assert parse_time("2024-03-01T12:00:00.250+01:00") == parse_time("2024-03-01T11:00:00.250Z")
    with pytest.raises(InvalidEventError, match="time zone"):
        parse_time("2024-03-01T12:00:00")


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"key": "k"}, "payload", "required (null for a tombstone)"),
        ({"payload": 1, "colour": "red"}, "colour", "unknown field"),
        ({"payload": 1, "key": ""}, "key", "must be a non-empty string"),
        ({"payload": 1, "headers": {"a": 1}}, "headers.a", "must be a string"),
        ({"payload": 1, "time": 5}, "time", "must be an RFC 3339 string"),
        ({"payload": "x" * 50}, "payload", "more than the 40 allowed"),
    ],
)
def test_a_malformed_event_names_its_field(body: object, field: str, message: str) -> None:
    limits = EventLimits(max_payload_bytes=40)
    with pytest.raises(InvalidEventError) as caught:
        new_event_from_json(body, limits, 0)
    assert caught.value.field == field
    assert message in caught.value.message


def test_an_event_keeps_its_payload_as_compact_json() -> None:
    event = new_event_from_json({"payload": {"b": [1, 2], "é": "ü"}}, EventLimits(), 5)
    assert event.payload_json == '{"b":[1,2],"é":"ü"}'
    assert event.time_ms == 5


def test_the_wire_form_is_json_with_the_raw_payload() -> None:
    stored = Event("users", 1, 7, "id-1", "k", "UserAdded", 0, '{"a":"b"}', '{"x":1}')
    assert json.loads(stored.to_json(deliveries=2)) == {
        "topic": "users",
        "partition": 1,
        "offset": 7,
        "id": "id-1",
        "key": "k",
        "type": "UserAdded",
        "time": "1970-01-01T00:00:00.000Z",
        "headers": {"a": "b"},
        "payload": {"x": 1},
        "deliveries": 2,
    }
