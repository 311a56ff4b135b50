"""A gateway's allowances without a control plane: a local token bucket and quota count."""

from __future__ import annotations

from datetime import UTC, datetime

from gossamer.proxy.budget import ADMIT, QUOTA_EXCEEDED, RATE_LIMITED, Budgets, lease_cap
from gossamer.snapshot.model import ApiPlan
from gossamer.snapshot.periods import period_end


def test_a_local_bucket_admits_the_burst_then_the_rate() -> None:
    allowance = Budgets().allowance("ns/p", "acme", ApiPlan("partner", rate=20, burst=40))
    now = allowance.stamp
    outcomes = [allowance.take(now) for _ in range(41)]
    assert outcomes.count(ADMIT) == 40
    assert outcomes[-1] == RATE_LIMITED
    assert abs(allowance.retry_after(now) - 0.05) < 1e-6
    assert allowance.take(now + 0.051) == ADMIT  # a token earned


def test_a_local_quota_stops_at_its_count() -> None:
    allowance = Budgets().allowance("ns/p", "acme", ApiPlan("p", quota=3, quota_period="day"))
    assert [allowance.take(0.0) for _ in range(4)] == [ADMIT, ADMIT, ADMIT, QUOTA_EXCEEDED]


def test_a_lease_is_at_most_a_tenth_of_a_second_or_an_eighth_of_the_burst() -> None:
    assert lease_cap(ApiPlan("p", rate=100, burst=100)) == 13
    assert lease_cap(ApiPlan("p", rate=20, burst=40)) == 5
    assert lease_cap(ApiPlan("p", quota=100000, quota_period="month")) == 100


def test_periods_end_at_calendar_boundaries_in_utc() -> None:
    now = datetime(2025, 12, 31, 23, 30, tzinfo=UTC).timestamp()
    assert period_end("month", now) == datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert period_end("hour", now) == datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    # 2025-12-31 is a Wednesday: the week ends on Monday.
    assert period_end("week", now) == datetime(2026, 1, 5, tzinfo=UTC).timestamp()
