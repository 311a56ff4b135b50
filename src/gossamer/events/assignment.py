"""Which member of a consumer group reads which partition: balanced, and sticky across changes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def assign(partitions: int, members: Sequence[str], previous: Mapping[int, str]) -> dict[int, str]:
    """Give every partition to one member so that counts differ by at most one.

    A partition stays with its previous owner whenever balance allows, so a member joining or
    leaving moves only the partitions that must move; which partitions do is deterministic.
    """
    if not members:
        return {}
    names = sorted(set(members))
    base, extra = divmod(partitions, len(names))
    current: dict[str, list[int]] = {name: [] for name in names}
    for partition in range(partitions):
        owner = previous.get(partition)
        if owner in current:
            current[owner].append(partition)
    # The members that already hold the most keep the larger quotas: fewer partitions move.
    by_holding = sorted(names, key=lambda name: (-len(current[name]), name))
    quota = {name: base + (1 if rank < extra else 0) for rank, name in enumerate(by_holding)}
    result: dict[int, str] = {}
    for name in names:
        for partition in current[name][: quota[name]]:
            result[partition] = name
    free = (p for p in range(partitions) if p not in result)
    for name in names:
        for _ in range(quota[name] - min(quota[name], len(current[name]))):
            result[next(free)] = name
    return dict(sorted(result.items()))


def partitions_of(assignment: Mapping[int, str], member: str) -> tuple[int, ...]:
    """The partitions an assignment gives one member, in order."""
    return tuple(sorted(p for p, owner in assignment.items() if owner == member))
