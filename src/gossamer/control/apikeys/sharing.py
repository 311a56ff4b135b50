"""A consumer's rate bucket on the control plane, shared by the gateway replicas that lease from
it in proportion to the demand each one reports.

Sans-IO: every method takes the time (`now`, monotonic seconds), so tests drive it with a
virtual clock. The bucket's tokens are split into a *pool* that any replica may take from and
one *credit* per active replica. What the rate earns goes to the credits, each in proportion to
its replica's demand (up to that share of the burst), and the rest to the pool. A grant spends
the asking replica's credit first, then the pool. Tokens only ever enter at the rate and the
pool plus every credit never exceeds the burst, so the replicas together get what one token
bucket would give, never more; when they all want more than the rate, each gets the rate's share
its demand is of the total, as one gateway serving all their traffic would admit (every request
with the same chance, whichever replica it reached). docs/api-gateway.md, "Limits across
replicas", gives the error bound.
"""

from __future__ import annotations

from dataclasses import dataclass

ACTIVE_S = 2.0
"""A replica that has not asked for this long has no share: its credit goes back to the pool."""
MIN_DEMAND = 1.0
"""The weight of a replica that reports no demand (a gateway that does not report it)."""
RETRY_CAP_S = 0.1
"""A refused replica is told to ask again within this long (or one permit's time at the whole
rate, if longer): its credit, which waits for it, then holds about a lease slice at most, even
when its share grows while it waits."""


@dataclass(slots=True)
class ReplicaShare:
    """What the bucket knows of one gateway replica."""

    demand: float
    """Requests per second it was offered lately, as it last reported (averaged by it)."""
    credit: float
    """Tokens set aside for it."""
    seen: float
    """When it last asked."""


class SharedBucket:
    """A token bucket of `rate` per second and `burst`, split between the replicas asking."""

    __slots__ = ("burst", "pool", "rate", "replicas", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        assert rate > 0 and burst > 0
        self.rate = rate
        self.burst = burst
        self.pool = burst
        self.stamp = now
        self.replicas: dict[str, ReplicaShare] = {}

    def __repr__(self) -> str:
        return (
            f"<SharedBucket {self.tokens():.1f}/{self.burst:g} tokens, pool {self.pool:.1f}, "
            f"{len(self.replicas)} replicas>"
        )

    def tokens(self) -> float:
        """Tokens in the bucket: the pool and every credit."""
        return self.pool + sum(share.credit for share in self.replicas.values())

    def grant(self, replica: str, want: int, demand: float, now: float) -> int:
        """Take up to `want` permits for `replica`, which was offered `demand` requests per
        second lately; how many it got."""
        self.refill(now)
        share = self._share(replica, demand, now)
        granted = min(want, int(share.credit + self.pool + 1e-9))
        if granted <= 0:
            return 0
        from_credit = min(float(granted), share.credit)
        share.credit -= from_credit
        self.pool = max(0.0, self.pool - (granted - from_credit))
        return granted

    def refund(self, replica: str, permits: int) -> None:
        """Put back permits just granted to `replica` that it cannot use (its quota ran out)."""
        share = self.replicas.get(replica)
        if share is not None:
            share.credit += permits
        else:
            self.pool += permits

    def give_back(self, permits: int, now: float) -> None:
        """Permits a replica leased and did not use: anyone's again."""
        self.refill(now)
        self.pool += max(0.0, min(float(permits), self.burst - self.tokens()))

    def retry_after(self, replica: str) -> float:
        """Seconds until `replica` could be granted a permit, if nobody else took any."""
        share = self.replicas.get(replica)
        have = self.pool + (share.credit if share is not None else 0.0)
        if have >= 1.0:
            return 0.0
        wait = (1.0 - have) / (self.rate * self._weight(share))
        return min(wait, max(RETRY_CAP_S, 1.0 / self.rate))

    def refill(self, now: float) -> None:
        """Add what the rate earned since the last look: to the active replicas' credits in
        proportion to their demand (each up to its share of the burst), the rest to the pool."""
        self._retire(now)
        earned = min(max(0.0, now - self.stamp) * self.rate, self.burst - self.tokens())
        self.stamp = now
        if earned <= 0:
            return
        total = sum(share.demand for share in self.replicas.values())
        left = earned
        for share in self.replicas.values():
            weight = share.demand / total
            added = max(0.0, min(earned * weight, self.burst * weight - share.credit))
            share.credit += added
            left -= added
        self.pool += left

    def _share(self, replica: str, demand: float, now: float) -> ReplicaShare:
        demand = max(MIN_DEMAND, demand)
        share = self.replicas.get(replica)
        if share is None:
            share = self.replicas[replica] = ReplicaShare(demand, 0.0, now)
            return share
        share.demand = demand
        share.seen = now
        return share

    def _retire(self, now: float) -> None:
        gone = [name for name, share in self.replicas.items() if now - share.seen > ACTIVE_S]
        for name in gone:
            self.pool += self.replicas.pop(name).credit

    def _weight(self, share: ReplicaShare | None) -> float:
        if share is None:
            return 1.0
        total = sum(other.demand for other in self.replicas.values())
        return share.demand / total
