"""Load balancers, sans-IO: endpoints in, choices out, counted over many picks."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from gossamer.proxy.balancer import LeastRequest, PeakEwma, RingHash, RoundRobin
from gossamer.proxy.cluster import ClusterState, EndpointState
from gossamer.snapshot import Cluster, Endpoint
from gossamer.snapshot.model import LbPolicy


def endpoints(count: int, weight: int = 1) -> list[EndpointState]:
    return [EndpointState(Endpoint(f"10.0.0.{n}", 80, weight=weight)) for n in range(count)]


def cluster(policy: LbPolicy, *weights: int) -> ClusterState:
    members = tuple(Endpoint(f"10.0.1.{n}", 80, weight=w) for n, w in enumerate(weights))
    return ClusterState(Cluster(name="c", endpoints=members, lb_policy=policy))


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(1234)


def test_round_robin_spreads_evenly() -> None:
    members = endpoints(3)
    balancer = RoundRobin()
    counts = Counter(balancer.pick(members, None).address for _ in range(300))
    assert sorted(counts.values()) == [100, 100, 100]


def test_round_robin_honours_weights() -> None:
    state = cluster("ROUND_ROBIN", 1, 3)
    counts = Counter(state.pick().address for _ in range(400))
    assert counts == {"10.0.1.0": 100, "10.0.1.1": 300}


def test_least_request_prefers_the_idle_endpoint() -> None:
    busy, idle = endpoints(2)
    busy.active = 10
    balancer = LeastRequest()
    picks = Counter(balancer.pick([busy, idle], None) is idle for _ in range(500))
    # Of two endpoints, the two choices are always both of them: the idle one always wins.
    assert picks == {True: 500}


def test_least_request_never_picks_the_busiest_of_three() -> None:
    members = endpoints(3)
    members[0].active = 50
    members[1].active = 1
    balancer = LeastRequest()
    counts = Counter(balancer.pick(members, None).address for _ in range(600))
    assert counts["10.0.0.0"] == 0
    assert counts["10.0.0.2"] > counts["10.0.0.1"]


def test_least_request_weighs_active_requests_by_weight() -> None:
    light, heavy = endpoints(2)
    heavy.weight = 4
    light.active, heavy.active = 1, 2
    balancer = LeastRequest()
    assert all(balancer.pick([light, heavy], None) is heavy for _ in range(100))


def test_ring_hash_is_stable_for_a_key() -> None:
    members = endpoints(5)
    balancer = RingHash()
    for user in range(50):
        key = b"user-%d" % user
        first = balancer.pick(members, key)
        assert all(balancer.pick(members, key) is first for _ in range(5))


def test_ring_hash_spreads_keys_over_every_endpoint() -> None:
    members = endpoints(4)
    balancer = RingHash()
    counts = Counter(balancer.pick(members, b"key-%d" % n).address for n in range(4000))
    assert len(counts) == 4
    assert min(counts.values()) > 500


def test_ring_hash_moves_only_the_keys_of_an_endpoint_that_leaves() -> None:
    members = endpoints(5)
    balancer = RingHash()
    keys = [b"key-%d" % n for n in range(2000)]
    before = {key: balancer.pick(members, key) for key in keys}
    gone = members[2]
    after = {key: balancer.pick([e for e in members if e is not gone], key) for key in keys}
    moved = [key for key in keys if before[key] is not after[key]]
    assert all(before[key] is gone for key in moved)
    assert len(moved) == sum(1 for key in keys if before[key] is gone)
    assert len(moved) < len(keys) * 0.35


def test_ring_hash_without_a_key_still_answers() -> None:
    members = endpoints(3)
    assert RingHash().pick(members, None) in members


def test_peak_ewma_avoids_a_slow_endpoint() -> None:
    members = endpoints(3)
    # The balancer decays latencies against the monotonic clock, so observe them on it too.
    now = time.monotonic()
    members[0].observe_latency(0.5, now)
    for member in members[1:]:
        member.observe_latency(0.002, now)
    balancer = PeakEwma()
    counts = Counter(balancer.pick(members, None).address for _ in range(600))
    assert counts["10.0.0.0"] == 0
    assert counts["10.0.0.1"] > 150 and counts["10.0.0.2"] > 150


def test_peak_ewma_reacts_to_a_latency_peak_at_once() -> None:
    member = endpoints(1)[0]
    member.observe_latency(0.01, 10.0)
    member.observe_latency(0.4, 10.1)
    assert member.ewma == 0.4
    member.observe_latency(0.01, 10.2)
    assert 0.3 < member.ewma < 0.4


def test_weights_repeat_endpoints_only_for_round_robin_and_random() -> None:
    assert len(cluster("ROUND_ROBIN", 1, 3).available) == 4
    assert len(cluster("LEAST_REQUEST", 1, 3).available) == 2
