"""A shared bucket splits its rate between gateway replicas by their demand, and never grants
more than one token bucket would: driven by simulated replicas on a virtual clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from gossamer.control.apikeys.sharing import ACTIVE_S, RETRY_CAP_S, SharedBucket

TICK = 0.005
SLICE = 13


@dataclass
class Replica:
    """A gateway as the bucket sees it: offered `rate` requests per second, it holds a slice of
    permits and asks again when it has fewer than half a slice, unless told to wait."""

    name: str
    rate: float
    due: float = 0.0
    permits: int = 0
    admitted: int = 0
    refused: int = 0
    wait_until: float = 0.0
    grants: list[tuple[float, int]] = field(default_factory=list)

    def step(self, bucket: SharedBucket, now: float) -> None:
        self.due += self.rate * TICK
        while self.due >= 1.0:
            self.due -= 1.0
            if self.permits == 0 and now >= self.wait_until:
                self.ask(bucket, now)
            if self.permits > 0:
                self.permits -= 1
                self.admitted += 1
            else:
                self.refused += 1
        if self.permits < SLICE / 2 and now >= self.wait_until and self.rate > 0:
            self.ask(bucket, now)

    def ask(self, bucket: SharedBucket, now: float) -> None:
        want = max(1, min(SLICE, round(self.rate * 0.1)))
        got = bucket.grant(self.name, want, self.rate, now)
        self.permits += got
        self.grants.append((now, got))
        if got == 0:
            self.wait_until = now + bucket.retry_after(self.name)


def run(bucket: SharedBucket, replicas: list[Replica], seconds: float, start: float = 0.0) -> float:
    """Step every replica each tick for `seconds`; checks the bucket's bound at every tick."""
    now = start
    steps = round(seconds / TICK)
    for _ in range(steps):
        now += TICK
        for replica in replicas:
            replica.step(bucket, now)
        assert bucket.tokens() <= bucket.burst + 1e-6
        assert bucket.pool >= -1e-9
    return now


def granted_between(replicas: list[Replica], start: float, end: float) -> int:
    return sum(n for r in replicas for when, n in r.grants if start < when <= end)


def test_two_replicas_over_the_limit_share_it_in_proportion_to_their_demand() -> None:
    bucket = SharedBucket(rate=100, burst=100, now=0.0)
    a, b = Replica("a", 200), Replica("b", 100)
    run(bucket, [a, b], 30.0)
    total = a.admitted + b.admitted
    assert 3100 - 2 * SLICE <= total <= 3100
    # The burst goes to whoever asks first; the rate, 2:1.
    assert 0.62 <= a.admitted / total <= 0.72, (a.admitted, b.admitted)
    after_burst = granted_between([a], 5.0, 30.0) / granted_between([a, b], 5.0, 30.0)
    assert abs(after_burst - 2 / 3) < 0.02, after_burst


def test_one_replica_alone_gets_the_whole_rate() -> None:
    bucket = SharedBucket(rate=100, burst=100, now=0.0)
    a = Replica("a", 300)
    run(bucket, [a], 10.0)
    assert 1100 - SLICE <= a.admitted <= 1100


def test_replicas_under_the_limit_get_all_they_ask_for() -> None:
    bucket = SharedBucket(rate=100, burst=100, now=0.0)
    a, b = Replica("a", 50), Replica("b", 30)
    run(bucket, [a, b], 10.0)
    assert a.refused == 0 and b.refused == 0
    assert abs(a.admitted - 500) <= 1 and abs(b.admitted - 300) <= 1


def test_a_replica_that_stops_asking_leaves_its_share_to_the_others() -> None:
    bucket = SharedBucket(rate=100, burst=100, now=0.0)
    a, b = Replica("a", 200), Replica("b", 100)
    now = run(bucket, [a, b], 10.0)
    b.rate = 0.0
    now = run(bucket, [a, b], ACTIVE_S + 0.5, start=now)
    assert "b" not in bucket.replicas
    end = run(bucket, [a, b], 5.0, start=now)
    assert 500 - SLICE <= granted_between([a], now, end) <= 500 + SLICE


def test_no_window_gets_more_than_the_burst_and_what_the_rate_earned() -> None:
    bucket = SharedBucket(rate=50, burst=20, now=0.0)
    replicas = [Replica("a", 400), Replica("b", 35), Replica("c", 90)]
    run(bucket, replicas, 12.0)
    times = sorted({when for r in replicas for when, _ in r.grants})
    for start in times[:: max(1, len(times) // 200)]:
        for length in (0.1, 1.0, 3.0):
            assert granted_between(replicas, start - 1e-9, start + length) <= 20 + 50 * length + 1


def test_permits_given_back_are_anyones_but_never_overfill_the_bucket() -> None:
    bucket = SharedBucket(rate=10, burst=20, now=0.0)
    assert bucket.grant("a", 15, 100, 0.0) == 15
    bucket.give_back(15, 0.0)
    assert bucket.tokens() == 20
    bucket.give_back(15, 0.0)
    assert bucket.tokens() == 20
    assert bucket.grant("b", 20, 100, 0.0) == 20


def test_a_refused_replica_waits_for_its_own_share_of_the_rate() -> None:
    bucket = SharedBucket(rate=100, burst=10, now=0.0)
    assert bucket.grant("a", 10, 300, 0.0) == 10
    assert bucket.grant("b", 1, 100, 0.0) == 0
    # b is a quarter of the demand: it earns a permit in 1 / (100 x 1/4) s.
    assert abs(bucket.retry_after("b") - 0.04) < 1e-9
    assert abs(bucket.retry_after("a") - 1 / 75) < 1e-9
    assert bucket.grant("b", 1, 100, 0.04) == 1


def test_a_replica_with_a_small_share_is_told_to_come_back_soon_all_the_same() -> None:
    bucket = SharedBucket(rate=100, burst=10, now=0.0)
    assert bucket.grant("a", 10, 990, 0.0) == 10
    assert bucket.grant("b", 1, 10, 0.0) == 0
    # A hundredth of the rate would take 1 s; its share may grow meanwhile, and its credit
    # would wait for it unspent.
    assert bucket.retry_after("b") == RETRY_CAP_S
    slow = SharedBucket(rate=2, burst=1, now=0.0)
    assert slow.grant("a", 1, 99, 0.0) == 1
    assert slow.grant("b", 1, 1, 0.0) == 0
    assert slow.retry_after("b") == 0.5  # one permit at the whole rate
