"""Partition assignment: balanced, complete, and moving as few partitions as it can."""

from hypothesis import given
from hypothesis import strategies as st

from gossamer.events.assignment import assign, partitions_of

names = st.lists(st.sampled_from([f"m{i}" for i in range(12)]), min_size=1, max_size=8, unique=True)


@given(st.integers(1, 64), names)
def test_every_partition_has_one_owner_and_counts_differ_by_at_most_one(
    partitions: int, members: list[str]
) -> None:
    result = assign(partitions, members, {})
    assert sorted(result) == list(range(partitions))
    counts = [len(partitions_of(result, m)) for m in members]
    assert max(counts) - min(counts) <= 1


@given(st.integers(1, 64), names, names)
def test_a_membership_change_moves_only_what_balance_requires(
    partitions: int, before: list[str], after: list[str]
) -> None:
    old = assign(partitions, before, {})
    new = assign(partitions, after, old)
    counts = [len(partitions_of(new, m)) for m in after]
    assert max(counts) - min(counts) <= 1
    # A surviving member keeps as many of its partitions as its new quota allows.
    for member in set(before) & set(after):
        kept = set(partitions_of(old, member)) & set(partitions_of(new, member))
        assert len(kept) == min(len(partitions_of(old, member)), len(partitions_of(new, member)))


def test_a_member_leaving_hands_over_only_its_own_partitions() -> None:
    old = assign(6, ["a", "b", "c"], {})
    new = assign(6, ["a", "b"], old)
    moved = {p for p in range(6) if old[p] != new[p]}
    assert moved == set(partitions_of(old, "c"))


def test_no_members_means_no_assignment() -> None:
    assert assign(4, [], {0: "gone"}) == {}


def test_more_members_than_partitions_leaves_some_idle() -> None:
    result = assign(2, ["a", "b", "c"], {})
    assert len(set(result.values())) == 2
