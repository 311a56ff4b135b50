"""Virtual IPs for Services: what DNS answers and where the VIP proxy listens.

The VIP of a Service is its `clusterIP` when that lies in the VIP network, else one derived
from a hash of `namespace/name` (probing past taken addresses in name order). Every process that
computes it from the same Services gets the same answer, with nothing to store: the DNS server
and the proxy that listens on the VIPs agree without talking to each other.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable

from gossamer.resources import Resource
from gossamer.resources.kinds.core import Service
from gossamer.snapshot.podnames import stateful_pod_services

DEFAULT_VIP_NETWORK = "127.77.0.0/16"

ServiceKey = tuple[str, str]
"""(namespace, name)."""


def assign_vips(
    services: Iterable[Service], network: str = DEFAULT_VIP_NETWORK
) -> dict[ServiceKey, str]:
    """A virtual IP for every Service that is not headless or ExternalName."""
    net = ipaddress.ip_network(network)
    first, size = int(net.network_address) + 1, net.num_addresses - 2
    assert size > 0, f"{network} has no room for addresses"
    given: dict[ServiceKey, str] = {}
    taken: set[str] = set()
    wanting: list[ServiceKey] = []
    for service in sorted(services, key=lambda s: (s.namespace, s.name)):
        key = (service.namespace, service.name)
        if service.spec.type == "ExternalName" or service.spec.cluster_ip == "None":
            continue
        chosen = service.spec.cluster_ip
        if chosen and _inside(chosen, net) and chosen not in taken:
            given[key] = chosen
            taken.add(chosen)
        else:
            wanting.append(key)
    for key in wanting:
        digest = int.from_bytes(hashlib.sha256(f"{key[0]}/{key[1]}".encode()).digest()[:8], "big")
        for step in range(size):
            address = str(ipaddress.ip_address(first + (digest + step) % size))
            if address not in taken:
                given[key] = address
                taken.add(address)
                break
    return given


def _inside(address: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        return ipaddress.ip_address(address) in network
    except ValueError:
        return False


def services_of(resources: Iterable[Resource]) -> list[Service]:
    """The Kubernetes Services among resources, and one for each StatefulSet replica under its
    governing Service (snapshot/podnames.py)."""
    listed = list(resources)
    services = [resource for resource in listed if isinstance(resource, Service)]
    return services + list(stateful_pod_services(listed))
