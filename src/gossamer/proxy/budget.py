"""A gateway's share of each consumer's rate limit and quota: permits leased from the control
plane, spent one per request; a local token bucket when no control plane shares the budget.

The hot path (`Allowance.take`) is float arithmetic and a comparison or two. Leases travel in
batches over the config stream (`LeaseRequest` / `LeaseGrants`); the agent sends what
`Budgets.outgoing` collects and hands answers to `Budgets.answer`. See docs/api-gateway.md for
the scheme and its error bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable

from gossamer.snapshot.model import ApiPlan
from gossamer.snapshot.periods import PERIOD_SECONDS, period_end
from gossamer.snapshot.protocol import Grant, Lease, LeaseGrants, LeaseRequest

ADMIT = 0
RATE_LIMITED = 1
QUOTA_EXCEEDED = 2
WAIT = 3
UNAVAILABLE = 4

LEASE_AHEAD_S = 0.1
"""A lease asks for about this long of the consumer's demand at this gateway."""
LEASE_TIMEOUT_S = 0.5
"""A lease unanswered this long: the plan's failure mode applies for `DEGRADED_S`."""
DEGRADED_S = 1.0
IDLE_RETURN_S = 1.0
"""Permits unused this long go back to the shared budget."""
MAX_WAITERS = 256
"""Requests of one consumer waiting for a lease; past it, 429 at once."""
DEMAND_AVERAGE_S = 0.5
"""Time constant of the offered rate a gateway reports with its leases."""
HEADERS_FRESH_S = 1.0
"""An admitted response's RateLimit field is formatted again after this long, or sooner when
a lease is answered: the numbers in it are at most this old."""


def lease_cap(plan: ApiPlan) -> int:
    """The most permits one lease asks for: 100 ms of the rate or an eighth of the burst, so a
    gateway never sits on more than that of a budget others may need."""
    if plan.rate > 0:
        return max(1, math.ceil(max(plan.rate * LEASE_AHEAD_S, plan.burst / 8)))
    if plan.quota > 0:
        return max(1, min(100, plan.quota // 1000))
    return 1


class Allowance:
    """One consumer's budget at this gateway."""

    __slots__ = (
        "asked_at",
        "budgets",
        "burst",
        "cap",
        "consumer",
        "degraded_until",
        "demand",
        "empty_until",
        "fail_open",
        "headers",
        "headers_until",
        "last_used",
        "limit",
        "local_quota",
        "local_quota_end",
        "low_water",
        "offered",
        "pending",
        "period",
        "permits",
        "plan",
        "policy",
        "product",
        "quota",
        "quota_left",
        "rate",
        "remaining",
        "stamp",
        "timer",
        "tokens",
        "used",
        "waiters",
        "window",
    )

    def __init__(self, budgets: Budgets, product: str, consumer: str, plan: ApiPlan) -> None:
        self.budgets = budgets
        self.product = product
        self.consumer = consumer
        self.permits = 0.0
        """Leased from the control plane, not spent yet."""
        self.pending = False
        self.timer: asyncio.TimerHandle | None = None
        self.waiters: list[asyncio.Future[None]] = []
        self.empty_until = 0.0
        """Monotonic time until which the shared budget said it has nothing."""
        self.limit = RATE_LIMITED
        self.degraded_until = 0.0
        self.used = 0
        self.offered = 0
        """Requests offered to the shared budget since the last lease, admitted or not."""
        self.demand = 0.0
        """Requests per second offered lately: `offered` averaged over `DEMAND_AVERAGE_S`."""
        self.asked_at = time.monotonic()
        self.last_used = 0.0
        self.remaining = 0
        self.quota_left = -1
        """Requests left in the quota period, as the last lease said (-1: not told yet)."""
        self.headers: list[tuple[bytes, bytes]] = []
        """RateLimit-Policy and RateLimit of admitted responses (`ratelimit_headers`)."""
        self.headers_until = 0.0
        self.plan = ""
        self.policy = b""
        self.tokens = 0.0
        self.stamp = 0.0
        self.local_quota = 0
        self.local_quota_end = 0.0
        self.rate = 0.0
        self.burst = 0.0
        self.window = 1.0
        self.quota = 0
        self.period = ""
        self.fail_open = True
        self.cap = 1
        self.low_water = 1.0
        """Ask for more below this many permits: half the last lease's demand, at least two
        (or half the cap) so that a slow consumer's next request finds one (half the cap until a
        first lease)."""
        self.adopt(plan)

    def __repr__(self) -> str:
        return (
            f"<Allowance {self.product}/{self.consumer} permits={self.permits:g} "
            f"pending={self.pending} waiting={len(self.waiters)}>"
        )

    def adopt(self, plan: ApiPlan) -> None:
        """Take the (possibly changed) plan's numbers; leased permits are kept."""
        if plan.rate != self.rate or plan.burst != self.burst:
            self.tokens = plan.burst
            self.stamp = time.monotonic()
        self.rate = plan.rate
        self.burst = plan.burst
        self.window = plan.window
        self.quota = plan.quota
        self.period = plan.quota_period
        self.plan = plan.name
        self.policy = _policy(plan)
        self.headers_until = 0.0
        self.fail_open = plan.fail_open
        self.cap = lease_cap(plan)
        self.low_water = self.cap / 2

    def take(self, now: float) -> int:
        """Spend a permit: ADMIT, RATE_LIMITED, QUOTA_EXCEEDED, WAIT (for a lease) or
        UNAVAILABLE (the budget cannot be reached and the plan fails closed)."""
        if self.permits >= 1.0:
            self.permits -= 1.0
            self.used += 1
            self.offered += 1
            self.last_used = now
            if not self.pending and self.permits < self.low_water:
                self.budgets.ask(self)
            return ADMIT
        budgets = self.budgets
        if not budgets.shared:
            return self._take_local(now)
        if not budgets.connected or now < self.degraded_until:
            return self._take_local(now) if self.fail_open else UNAVAILABLE
        self.offered += 1
        if now < self.empty_until:
            return self.limit
        if len(self.waiters) >= MAX_WAITERS:
            return RATE_LIMITED
        if not self.pending:
            self.budgets.ask(self)
        return WAIT

    def wait(self) -> asyncio.Future[None]:
        """A future done when the next lease is answered (or times out)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        return future

    def retry_after(self, now: float) -> float:
        """Seconds until a request of this consumer may be admitted again."""
        if self._alone(now):
            if self.limit == QUOTA_EXCEEDED:
                return max(0.0, self.local_quota_end - time.time())
            return (1.0 - self.tokens) / self.rate if self.rate > 0 else 1.0
        return max(0.0, self.empty_until - now)

    def left(self, now: float) -> int:
        """Permits left, as far as this gateway knows (RateLimit's `r`)."""
        if self._alone(now):
            return int(min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate))
        return self.remaining + int(self.permits)

    def ratelimit_headers(self, now: float) -> list[tuple[bytes, bytes]]:
        """`RateLimit-Policy` and `RateLimit` for an admitted response (the IETF draft's
        structured form, as on a 429): formatted at most once a second, and again after a lease
        is answered, so `r` and `t` may be that old."""
        if now < self.headers_until:
            return self.headers
        self.headers_until = now + HEADERS_FRESH_S
        items: list[str] = []
        if self.rate > 0:
            left = max(0, min(int(self.burst), self.left(now)))
            full = max(0, math.ceil((self.burst - left) / self.rate))
            items.append(f'"{self.plan}";r={left};t={full}')
        if self.quota > 0:
            wall = time.time()
            if self._alone(now):
                quota_left = self.quota - self.local_quota
            elif self.quota_left >= 0:
                quota_left = self.quota_left + int(self.permits)
            else:
                quota_left = self.quota
            ends = period_end(self.period, wall)
            reset = max(0, math.ceil(ends - wall))
            items.append(f'"{self.plan}-quota";r={max(0, quota_left)};t={reset}')
        self.headers = [
            (b"ratelimit-policy", self.policy),
            (b"ratelimit", ", ".join(items).encode("latin-1")),
        ]
        return self.headers

    def _alone(self, now: float) -> bool:
        budgets = self.budgets
        return not budgets.shared or not budgets.connected or now < self.degraded_until

    def _take_local(self, now: float) -> int:
        if self.quota > 0:
            wall = time.time()
            if wall >= self.local_quota_end:
                self.local_quota_end = period_end(self.period, wall)
                self.local_quota = 0
            if self.local_quota >= self.quota:
                self.limit = QUOTA_EXCEEDED
                return QUOTA_EXCEEDED
        if self.rate > 0:
            tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if tokens < 1.0:
                self.tokens = tokens
                self.limit = RATE_LIMITED
                return RATE_LIMITED
            self.tokens = tokens - 1.0
        self.local_quota += 1
        return ADMIT

    # Leases

    def lease(self, now: float) -> Lease:
        """What to ask for: the demand of the last `LEASE_AHEAD_S`, plus those waiting; and the
        rate of requests offered lately, by which the control plane shares."""
        since = max(now - self.asked_at, 1e-6)
        elapsed = max(since, 0.01)
        demand = math.ceil(self.used / elapsed * LEASE_AHEAD_S) + len(self.waiters)
        # An average on this gateway's own clock: leases a few milliseconds apart carry a few
        # requests each and would swing the rate the control plane shares by.
        weight = min(1.0, since / DEMAND_AVERAGE_S)
        self.demand += weight * (max(0, self.offered) / since - self.demand)
        self.used = 0
        self.offered = 0
        self.asked_at = now
        want = max(1, min(self.cap, demand))
        # Half of what the demand asked for: a gateway using a tenth of the cap asked again
        # after every answer (hundreds of leases a second at full speed).
        self.low_water = max(want / 2, min(self.cap / 2, 2.0))
        return Lease(self.product, self.consumer, want=want, demand=self.demand)

    def granted(self, grant: Grant, now: float) -> None:
        """A lease's answer: add its permits and wake those waiting for it."""
        self._settle()
        if grant.unknown:
            self.degraded_until = now + DEGRADED_S
        else:
            self.permits += grant.granted
            self.remaining = grant.remaining
            self.quota_left = grant.quota_remaining
            self.headers_until = 0.0
            if grant.granted == 0:
                self.empty_until = now + grant.retry_after
                self.limit = QUOTA_EXCEEDED if grant.limit == "quota" else RATE_LIMITED
        self._wake()

    def expired(self) -> None:
        """No answer in time: the plan's failure mode applies for a while."""
        self.timer = None
        if not self.pending:
            return
        self.pending = False
        self.degraded_until = time.monotonic() + DEGRADED_S
        self.budgets.expired += 1
        self._wake()

    def _settle(self) -> None:
        self.pending = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        # Each is decided again, and counted again then.
        self.offered -= len(waiters)
        for future in waiters:
            if not future.done():
                future.set_result(None)


class Budgets:
    """Every consumer's allowance at this gateway; kept across snapshots."""

    __slots__ = ("allowances", "asking", "connected", "expired", "seq", "shared", "wake")

    def __init__(self) -> None:
        self.allowances: dict[tuple[str, str], Allowance] = {}
        self.shared = False
        """Whether a control plane holds the budgets (False: each gateway limits alone)."""
        self.connected = False
        """Whether leases can be sent now; while not, each plan's failure mode applies."""
        self.asking: dict[tuple[str, str], Lease] = {}
        self.seq = 0
        self.expired = 0
        self.wake: asyncio.Event | None = None

    def __repr__(self) -> str:
        mode = "shared" if self.shared else "local"
        return f"<Budgets {mode} {len(self.allowances)} consumers, {len(self.asking)} asking>"

    def allowance(self, product: str, consumer: str, plan: ApiPlan) -> Allowance:
        """The consumer's allowance, made on first use."""
        key = (product, consumer)
        found = self.allowances.get(key)
        if found is None:
            found = self.allowances[key] = Allowance(self, product, consumer, plan)
        return found

    def ask(self, allowance: Allowance) -> None:
        """Queue a lease for the next batch; the sender wakes once per batch."""
        now = time.monotonic()
        allowance.pending = True
        lease = allowance.lease(now)
        key = (allowance.product, allowance.consumer)
        earlier = self.asking.get(key)
        if earlier is not None:
            lease = Lease(lease.product, lease.consumer, lease.want, earlier.returned, lease.demand)
        self.asking[key] = lease
        loop = asyncio.get_running_loop()
        allowance.timer = loop.call_later(LEASE_TIMEOUT_S, allowance.expired)
        if self.wake is not None:
            self.wake.set()

    def outgoing(self) -> LeaseRequest | None:
        """The batch to send now, or None."""
        if not self.asking:
            return None
        self.seq += 1
        leases = tuple(self.asking.values())
        self.asking = {}
        return LeaseRequest(self.seq, leases)

    def answer(self, grants: LeaseGrants) -> None:
        """Hand each grant to its allowance."""
        now = time.monotonic()
        for grant in grants.grants:
            allowance = self.allowances.get((grant.product, grant.consumer))
            if allowance is not None:
                allowance.granted(grant, now)

    def give_back_idle(self) -> None:
        """Return permits unused for `IDLE_RETURN_S` (called every quarter second)."""
        now = time.monotonic()
        for key, allowance in self.allowances.items():
            if allowance.permits >= 1.0 and now - allowance.last_used > IDLE_RETURN_S:
                returned = int(allowance.permits)
                allowance.permits -= returned
                earlier = self.asking.get(key)
                if earlier is not None:
                    self.asking[key] = Lease(key[0], key[1], earlier.want, returned, earlier.demand)
                else:
                    self.asking[key] = Lease(key[0], key[1], 0, returned)
        if self.asking and self.wake is not None:
            self.wake.set()

    def retire(self, keep: set[tuple[str, str]]) -> None:
        """Forget consumers a new snapshot no longer has (their permits are given back)."""
        for key in [key for key in self.allowances if key not in keep]:
            allowance = self.allowances.pop(key)
            allowance._settle()
            allowance._wake()
            if allowance.permits >= 1.0 and self.shared:
                self.asking[key] = Lease(key[0], key[1], 0, int(allowance.permits))

    async def run(self, send: Callable[[LeaseRequest], Awaitable[None]]) -> None:
        """Send batches while connected: at most one per loop turn, idle permits every 250 ms."""
        self.wake = wake = asyncio.Event()
        self.shared = self.connected = True
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + 0.25
        try:
            while True:
                timeout = max(0.0, next_sweep - loop.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout)
                wake.clear()
                if loop.time() >= next_sweep:
                    self.give_back_idle()
                    next_sweep = loop.time() + 0.25
                request = self.outgoing()
                if request is not None:
                    await send(request)
        finally:
            self.wake = None
            self.connected = False


def _policy(plan: ApiPlan) -> bytes:
    """A plan's `RateLimit-Policy`: its bucket (burst in the rate's window), then its quota."""
    items = []
    if plan.rate > 0:
        items.append(f'"{plan.name}";q={int(plan.burst)};w={max(1, round(plan.window))}')
    if plan.quota > 0:
        items.append(f'"{plan.name}-quota";q={plan.quota};w={PERIOD_SECONDS[plan.quota_period]}')
    return ", ".join(items).encode("latin-1")
