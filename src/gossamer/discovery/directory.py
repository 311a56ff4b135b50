"""What the DNS knows about services: their virtual IPs, ports, and endpoints when headless."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PortRecord:
    """A named service port, for SRV answers."""

    name: str
    port: int
    protocol: str = "tcp"


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """A Service as DNS sees it: a VIP (or none, when headless) and where its endpoints are."""

    name: str
    namespace: str
    addresses: tuple[str, ...] = ()
    ports: tuple[PortRecord, ...] = ()
    endpoints: tuple[str, ...] = ()
    headless: bool = False

    def a_records(self) -> tuple[str, ...]:
        """The addresses a lookup of the service name returns."""
        return self.endpoints if self.headless else self.addresses


class Directory(Protocol):
    """Where the DNS looks services up; the control plane's registry implements it."""

    def lookup(self, name: str, namespace: str) -> ServiceRecord | None:
        """The service `name` in `namespace`, or None."""
        ...

    def namespaces(self) -> frozenset[str]:
        """Every namespace that has a service (to tell `svc.ns` from an outside name)."""
        ...


class MemoryDirectory:
    """A directory held in memory and replaced whole by `set`."""

    def __init__(self, records: Iterable[ServiceRecord] = ()) -> None:
        self._records: dict[tuple[str, str], ServiceRecord] = {}
        self._namespaces: frozenset[str] = frozenset()
        self.set(records)

    def set(self, records: Iterable[ServiceRecord]) -> None:
        """Replace every record at once (readers never see half an update)."""
        table = {(r.name, r.namespace): r for r in records}
        self._records = table
        self._namespaces = frozenset(namespace for _, namespace in table)

    def lookup(self, name: str, namespace: str) -> ServiceRecord | None:
        """The service `name` in `namespace`, or None."""
        return self._records.get((name, namespace))

    def namespaces(self) -> frozenset[str]:
        """Every namespace that has a service."""
        return self._namespaces
