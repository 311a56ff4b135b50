"""Delivery state of a partition: commits below the lowest unacknowledged event, retries, caps."""

from gossamer.events.cursor import NackOutcome, PartitionCursor, RetryPolicy
from gossamer.events.model import Event


def events(*offsets: int, partition: int = 0) -> list[Event]:
    return [Event("t", partition, o, f"id{o}", None, None, 0, "{}", "null") for o in offsets]


def test_the_commit_stops_at_the_lowest_unacknowledged_event() -> None:
    cursor = PartitionCursor(0, 10, RetryPolicy())
    cursor.deliver(events(10, 11, 12))
    assert cursor.committable() == 10
    assert cursor.ack(11)
    assert cursor.committable() == 10
    assert cursor.ack(10)
    assert cursor.committable() == 12
    assert cursor.ack(12)
    assert cursor.committable() == 13


def test_holes_left_by_compaction_do_not_hold_the_commit_back() -> None:
    cursor = PartitionCursor(0, 0, RetryPolicy())
    cursor.deliver(events(0, 5, 9))
    for offset in (0, 5, 9):
        cursor.ack(offset)
    assert cursor.committable() == 10


def test_an_unknown_ack_is_refused() -> None:
    cursor = PartitionCursor(0, 0, RetryPolicy())
    cursor.deliver(events(0))
    assert not cursor.ack(7)
    assert cursor.nack(7, 0.0) is NackOutcome.UNKNOWN


def test_a_failed_event_comes_back_after_its_backoff_and_holds_the_commit() -> None:
    cursor = PartitionCursor(0, 0, RetryPolicy(backoff_s=1.0, backoff_max_s=8.0))
    cursor.deliver(events(0, 1))
    cursor.ack(1)
    assert cursor.nack(0, now=100.0) is NackOutcome.RETRY
    assert cursor.committable() == 0
    assert cursor.due(100.5) == []
    assert cursor.next_due() == 101.0
    (again,) = cursor.due(101.0)
    assert (again.event.offset, again.deliveries) == (0, 2)
    assert cursor.nack(0, now=101.0) is NackOutcome.RETRY
    assert cursor.next_due() == 103.0  # the backoff doubles


def test_after_max_deliveries_the_event_goes_to_dead_letter_then_commits() -> None:
    cursor = PartitionCursor(0, 0, RetryPolicy(backoff_s=0.0, max_deliveries=2))
    cursor.deliver(events(0))
    assert cursor.nack(0, 0.0) is NackOutcome.RETRY
    cursor.due(0.0)
    assert cursor.nack(0, 0.0) is NackOutcome.DEAD_LETTER
    assert cursor.committable() == 0  # still in flight until the dead letter is stored
    assert cursor.ack(0)
    assert cursor.committable() == 1


def test_deliveries_by_a_previous_owner_count_towards_the_cap() -> None:
    first = PartitionCursor(0, 0, RetryPolicy())
    first.deliver(events(0, 1))
    first.ack(1)
    counts = first.abandon()
    assert counts == {0: 1}
    second = PartitionCursor(0, 0, RetryPolicy(), counts)
    delivered = second.deliver(events(0, 1))
    assert [d.deliveries for d in delivered] == [2, 1]


def test_when_an_owner_dies_only_its_oldest_unacknowledged_event_counts_as_failed() -> None:
    first = PartitionCursor(0, 0, RetryPolicy())
    first.deliver(events(0, 1, 2))
    second = PartitionCursor(0, 0, RetryPolicy(), first.abandon())
    assert [d.deliveries for d in second.deliver(events(0, 1, 2))] == [2, 1, 1]
