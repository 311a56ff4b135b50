"""Topic configuration: durations, validation with field paths, and the spec round trip."""

import pytest

from gossamer.events.errors import InvalidRequestError
from gossamer.events.topics import TopicConfig, duration_ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [("1.5s", 1500), ("100ms", 100), ("1h30m", 5_400_000), ("720h", 2_592_000_000), ("0s", 0)],
)
def test_durations(text: str, ms: int) -> None:
    assert duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "5", "1d", "s", "1h 2m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidRequestError, match="not a duration"):
        duration_ms(text)


def test_a_spec_becomes_a_config_and_back() -> None:
    spec = {
        "partitions": 3,
        "retention": {"time": "720h", "bytes": 3000},
        "compaction": {"enabled": True, "minLag": "1m"},
        "schema": {"type": "object", "required": ["userId"]},
        "deadLetter": {"topic": "users-dlq", "maxDeliveries": 4},
    }
    config = TopicConfig.from_spec("users", spec)
    assert config.retention_ms == 2_592_000_000
    assert config.partition_retention_bytes == 1000
    assert config.compaction_lag_ms == 60_000
    assert (config.dead_letter_topic, config.max_deliveries) == ("users-dlq", 4)
    assert TopicConfig.from_spec("users", config.to_spec()) == config


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"partitions": 0}, "spec.partitions: must be between 1 and 1024"),
        ({"partitons": 2}, "spec.partitons: unknown field (did you mean partitions?)"),
        ({"deadLetter": {"topic": "users"}}, "a topic cannot be its own dead letter"),
        ({"schema": {"type": "thing"}}, "spec.schema.type: not a valid JSON Schema"),
    ],
)
def test_a_wrong_spec_names_the_field_as_validate_does(
    spec: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        TopicConfig.from_spec("users", spec)
    assert message in str(caught.value)


def test_topic_names_are_dns_labels() -> None:
    with pytest.raises(InvalidRequestError, match="not a topic name"):
        TopicConfig.from_spec("Users_1", {})
