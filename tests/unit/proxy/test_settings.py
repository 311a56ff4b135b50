"""The proxy reads some snapshot settings per request from its own copies (attributes compiled
code reads directly): each copy carries every field, so a field added later is not lost."""

from __future__ import annotations

import msgspec

from gossamer.proxy.cluster import ClusterState, PoolSettings
from gossamer.proxy.listener import ConnectionLimits
from gossamer.proxy.router import CompiledRoute
from gossamer.snapshot import Cluster, ListenerLimits, PoolLimits, Route
from gossamer.snapshot.model import RetryPolicy


def distinct(struct: type[msgspec.Struct]) -> msgspec.Struct:
    """An instance whose every field differs from its default and from the others."""
    values = {}
    for number, field in enumerate(msgspec.structs.fields(struct), start=7):
        values[field.name] = float(number) + 0.5 if field.type is float else number
    return struct(**values)


def test_connection_limits_carry_every_listener_limit() -> None:
    limits = distinct(ListenerLimits)
    copy = ConnectionLimits(limits)  # type: ignore[arg-type]
    for field in msgspec.structs.fields(ListenerLimits):
        assert getattr(copy, field.name) == getattr(limits, field.name), field.name


def test_pool_settings_carry_every_pool_limit() -> None:
    limits = distinct(PoolLimits)
    copy = PoolSettings(limits)  # type: ignore[arg-type]
    for field in msgspec.structs.fields(PoolLimits):
        assert getattr(copy, field.name) == getattr(limits, field.name), field.name


def test_a_cluster_state_reads_its_config() -> None:
    config = Cluster(name="c", limits=PoolLimits(max_requests=3), lb_policy="PEAK_EWMA")
    state = ClusterState(config)
    assert state.limits.max_requests == 3
    assert state.peak_ewma and not state.hashed and state.outlier_detection is None


def test_a_compiled_route_keeps_its_timeout_retries_and_mirrors() -> None:
    route = Route(name="r", timeout=2.5, retries=RetryPolicy(attempts=4))
    compiled = CompiledRoute(route)
    assert (compiled.timeout, compiled.retries, compiled.mirrors) == (2.5, route.retries, ())
