"""Health check verdicts, sans-IO: thresholds of consecutive results, and what passes."""

from __future__ import annotations

import pytest

from gossamer.proxy.cluster import ClusterState, EndpointState
from gossamer.proxy.healthcheck import passing_status, record_probe
from gossamer.snapshot import Cluster, Endpoint, HealthCheck

CHECK = HealthCheck(unhealthy_threshold=3, healthy_threshold=2)


def test_an_endpoint_fails_after_the_unhealthy_threshold_in_a_row() -> None:
    endpoint = EndpointState(Endpoint("127.0.0.1", 1))
    assert [record_probe(endpoint, CHECK, False) for _ in range(2)] == [False, False]
    assert record_probe(endpoint, CHECK, True) is False
    assert [record_probe(endpoint, CHECK, False) for _ in range(3)] == [False, False, True]
    assert endpoint.check_failed
    assert record_probe(endpoint, CHECK, False) is False


def test_an_endpoint_passes_again_after_the_healthy_threshold_in_a_row() -> None:
    endpoint = EndpointState(Endpoint("127.0.0.1", 1))
    endpoint.check_failed = True
    assert record_probe(endpoint, CHECK, True) is False
    assert record_probe(endpoint, CHECK, False) is False
    assert [record_probe(endpoint, CHECK, True) for _ in range(2)] == [False, True]
    assert not endpoint.check_failed


def test_a_verdict_takes_the_endpoint_out_of_balancing_and_back() -> None:
    config = Cluster(
        name="c",
        endpoints=(Endpoint("127.0.0.1", 1), Endpoint("127.0.0.1", 2)),
        health_check=CHECK,
    )
    cluster = ClusterState(config)
    first = cluster.endpoints[0]
    first.check_failed = True
    cluster.mark_checked(first)
    assert cluster.available == [cluster.endpoints[1]]
    # A new snapshot keeps the verdict while it keeps the check ...
    rebuilt = ClusterState(config, cluster)
    assert rebuilt.available == [rebuilt.endpoints[1]]
    # ... and forgets it when the check is removed.
    unchecked = ClusterState(Cluster(name="c", endpoints=config.endpoints), rebuilt)
    assert len(unchecked.available) == 2


def test_an_endpoint_declared_unhealthy_stays_so_whatever_the_checks_say() -> None:
    config = Cluster(
        name="c",
        endpoints=(Endpoint("127.0.0.1", 1, healthy=False), Endpoint("127.0.0.1", 2)),
        health_check=CHECK,
    )
    cluster = ClusterState(config)
    cluster.mark_checked(cluster.endpoints[0])
    assert cluster.available == [cluster.endpoints[1]]


@pytest.mark.parametrize(
    ("line", "passes"),
    [
        (b"HTTP/1.1 200 OK\r\n", True),
        (b"HTTP/1.0 204 No Content\r\n", True),
        (b"HTTP/1.1 299\r\n", True),
        (b"HTTP/1.1 301 Moved\r\n", False),
        (b"HTTP/1.1 503 Unavailable\r\n", False),
        (b"HTTP/1.1 2000 OK\r\n", False),
        (b"SSH-2.0-OpenSSH\r\n", False),
        (b"", False),
    ],
)
def test_only_a_2xx_status_line_passes(line: bytes, passes: bool) -> None:
    assert passing_status(line) is passes
