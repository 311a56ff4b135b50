"""Load balancers: pick one endpoint of a cluster for a request."""

from __future__ import annotations

import random
import time

# hashlib itself would load OpenSSL's digests: 1.9 MB more per proxy, for one hash function.
from _blake2 import blake2b
from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gossamer.proxy.cluster import EndpointState


class Balancer:
    """Chooses among the endpoints that may take traffic now (a class rather than a protocol, so
    that compiled code calls `pick` directly)."""

    __slots__ = ()

    def pick(self, endpoints: Sequence[EndpointState], key: bytes | None) -> EndpointState:
        """One of `endpoints` (never empty)."""
        raise NotImplementedError

    def spread(self, endpoints: list[EndpointState]) -> list[EndpointState]:
        """The endpoints `pick` chooses among, from those that may take traffic: how weights
        count is the balancer's business (here, through each endpoint's own weight)."""
        return endpoints


def _repeated_by_weight(endpoints: list[EndpointState]) -> list[EndpointState]:
    # A balancer blind to weights sees an endpoint of weight w w times (at most 100).
    if all(e.weight == 1 for e in endpoints):
        return endpoints
    return [e for e in endpoints for _ in range(min(e.weight, 100))]


class RoundRobin(Balancer):
    """Each endpoint in turn (weights repeat an endpoint)."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = random.randrange(1 << 16)

    def pick(self, endpoints: Sequence[EndpointState], key: bytes | None) -> EndpointState:
        """The next endpoint in the cycle."""
        self._next += 1
        return endpoints[self._next % len(endpoints)]

    def spread(self, endpoints: list[EndpointState]) -> list[EndpointState]:
        """Each endpoint repeated by its weight."""
        return _repeated_by_weight(endpoints)


class RandomChoice(Balancer):
    """Any endpoint, uniformly (weights repeat an endpoint)."""

    __slots__ = ()

    def pick(self, endpoints: Sequence[EndpointState], key: bytes | None) -> EndpointState:
        """A random endpoint."""
        return endpoints[random.randrange(len(endpoints))]

    def spread(self, endpoints: list[EndpointState]) -> list[EndpointState]:
        """Each endpoint repeated by its weight."""
        return _repeated_by_weight(endpoints)


class LeastRequest(Balancer):
    """Power of two choices: of two different random endpoints, the one with fewer requests."""

    __slots__ = ()

    def pick(self, endpoints: Sequence[EndpointState], key: bytes | None) -> EndpointState:
        """The less loaded of two random endpoints."""
        count = len(endpoints)
        if count == 1:
            return endpoints[0]
        # Two different endpoints: drawn independently, both draws would land on the same
        # (possibly stuck) endpoint 1/n of the time, however loaded it is.
        at = random.randrange(count)
        first = endpoints[at]
        second = endpoints[(at + 1 + random.randrange(count - 1)) % count]
        return first if first.active * second.weight <= second.active * first.weight else second


class PeakEwma(Balancer):
    """Power of two choices on cost = peak-sensitive moving average of latency x (active + 1).

    A slow endpoint's latency counts at once (peak); a fast answer lowers it gradually, with a
    decay of `decay` seconds, as Finagle and linkerd2-proxy do.
    """

    __slots__ = ()

    def pick(self, endpoints: Sequence[EndpointState], key: bytes | None) -> EndpointState:
        """The cheaper of two random endpoints."""
        count = len(endpoints)
        if count == 1:
            return endpoints[0]
        at = random.randrange(count)
        first = endpoints[at]
        second = endpoints[(at + 1 + random.randrange(count - 1)) % count]
        now = time.monotonic()
        return first if first.cost(now) <= second.cost(now) else second


class RingHash(Balancer):
    """Consistent hashing on a ring: the same key goes to the same endpoint while it stays up."""

    __slots__ = ("_hashes", "_owners", "_source")

    POINTS_PER_WEIGHT = 64

    def __init__(self) -> None:
        self._source: tuple[int, ...] = ()
        self._hashes: list[int] = []
        self._owners: list[EndpointState] = []

    def pick(self, endpoints: Sequence[EndpointState], key: bytes | None) -> EndpointState:
        """The endpoint that owns the key's point on the ring (random without a key)."""
        if key is None:
            return endpoints[random.randrange(len(endpoints))]
        identity = tuple(id(e) for e in endpoints)
        if identity != self._source:
            self._build(endpoints, identity)
        point = _hash(key)
        index = bisect_left(self._hashes, point)
        return self._owners[index % len(self._owners)]

    def _build(self, endpoints: Sequence[EndpointState], identity: tuple[int, ...]) -> None:
        ring: list[tuple[int, EndpointState]] = []
        for endpoint in dict.fromkeys(endpoints):
            name = f"{endpoint.address}:{endpoint.port}".encode()
            for replica in range(self.POINTS_PER_WEIGHT * endpoint.weight):
                ring.append((_hash(name + b"#" + str(replica).encode()), endpoint))
        ring.sort(key=lambda item: item[0])
        self._hashes = [point for point, _ in ring]
        self._owners = [owner for _, owner in ring]
        self._source = identity


def _hash(data: bytes) -> int:
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


def balancer_for(policy: str) -> Balancer:
    """A fresh balancer for a snapshot's lb_policy."""
    if policy == "ROUND_ROBIN":
        return RoundRobin()
    if policy == "RANDOM":
        return RandomChoice()
    if policy == "RING_HASH":
        return RingHash()
    if policy == "PEAK_EWMA":
        return PeakEwma()
    return LeastRequest()
