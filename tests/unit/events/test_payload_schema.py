"""Schema violations name the failing field as a path into the payload."""

import pytest

from gossamer.events.errors import SchemaViolationError
from gossamer.events.payload_schema import PayloadSchema

SCHEMA = {
    "type": "object",
    "required": ["userId", "email"],
    "properties": {
        "userId": {"type": "string"},
        "email": {"type": "string", "format": "email"},
        "roles": {"type": "array", "items": {"type": "object", "required": ["name"]}},
    },
}


def violations(payloads: list[object]) -> list[tuple[int, str]]:
    with pytest.raises(SchemaViolationError) as caught:
        PayloadSchema(SCHEMA).check(payloads)
    return [(v.index, v.path) for v in caught.value.violations]


def test_a_missing_property_is_named_by_its_own_path() -> None:
    assert violations([{"userId": "u1"}]) == [(0, "payload.email")]


def test_two_missing_properties_are_two_violations() -> None:
    assert violations([{}]) == [(0, "payload.email"), (0, "payload.userId")]


def test_nested_paths_include_list_indexes() -> None:
    payload = {"userId": "u", "email": "a@b.c", "roles": [{"name": "x"}, {}]}
    assert violations([payload]) == [(0, "payload.roles[1].name")]


def test_the_index_says_which_event_of_a_batch_failed() -> None:
    good = {"userId": "u", "email": "a@b.c"}
    assert violations([good, good, {"userId": 3, "email": "a@b.c"}]) == [(2, "payload.userId")]


def test_formats_are_checked() -> None:
    assert violations([{"userId": "u", "email": "not-an-address"}]) == [(0, "payload.email")]


def test_valid_payloads_pass() -> None:
    PayloadSchema(SCHEMA).check([{"userId": "u", "email": "a@b.c", "roles": []}])
