"""A gateway's allowances without a control plane: a local token bucket and quota count."""

from __future__ import annotations

from datetime import UTC, datetime

from gossamer.proxy.budget import ADMIT, QUOTA_EXCEEDED, RATE_LIMITED, WAIT, Budgets, lease_cap
from gossamer.snapshot.model import ApiPlan
from gossamer.snapshot.periods import period_end
from gossamer.snapshot.protocol import Grant


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


async def test_a_lease_reports_every_request_offered_admitted_or_refused_once() -> None:
    budgets = Budgets()
    budgets.shared = budgets.connected = True
    allowance = budgets.allowance("ns/p", "acme", ApiPlan("partner", rate=100, burst=100))
    start = allowance.asked_at
    allowance.permits = 3.0
    allowance.pending = True  # a lease in flight: none is asked for meanwhile
    assert [allowance.take(start) for _ in range(3)] == [ADMIT] * 3
    assert allowance.take(start) == WAIT
    waiting = allowance.wait()
    allowance.granted(Grant("ns/p", "acme", retry_after=1.0, limit="rate"), start)
    assert waiting.done()
    # The request that waited is decided again after the answer: refused, counted once.
    assert allowance.take(start) == RATE_LIMITED
    assert allowance.take(start) == RATE_LIMITED  # another request
    lease = allowance.lease(start + 0.5)
    assert lease.demand == 5 / 0.5


def test_ratelimit_fields_of_admitted_responses_are_formatted_at_most_once_a_second() -> None:
    plan = ApiPlan("partner", rate=20, burst=40, quota=100, quota_period="day")
    allowance = Budgets().allowance("ns/p", "acme", plan)
    now = allowance.stamp
    assert allowance.take(now) == ADMIT
    first = allowance.ratelimit_headers(now)
    assert first[0] == (b"ratelimit-policy", b'"partner";q=40;w=1, "partner-quota";q=100;w=86400')
    name, value = first[1]
    assert name == b"ratelimit"
    assert value.startswith(b'"partner";r=39;t=1, "partner-quota";r=99;t=')
    assert allowance.take(now) == ADMIT
    assert allowance.ratelimit_headers(now + 0.5) is first
    # A second later the local bucket has earned 20: it is full again.
    assert allowance.ratelimit_headers(now + 1.0)[1][1].startswith(b'"partner";r=40;t=0, ')
