"""Services as the mesh DNS answers them: a virtual IP each, named ports, headless endpoints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gossamer.discovery.directory import PortRecord, ServiceRecord
from gossamer.resources import Resource
from gossamer.snapshot.endpoints import endpoint_index
from gossamer.snapshot.vips import ServiceKey, services_of


def service_records(
    resources: Sequence[Resource], vips: Mapping[ServiceKey, str]
) -> list[ServiceRecord]:
    """What the DNS answers for each Service: its VIP, or its ready endpoints when headless."""
    index = endpoint_index(resources)
    records = []
    for service in services_of(resources):
        headless = service.spec.cluster_ip == "None"
        ports = tuple(
            PortRecord(port.name or str(port.port), port.port, port.protocol.lower())
            for port in service.spec.ports
        )
        host = f"{service.name}.{service.namespace}.svc.cluster.local"
        endpoints = sorted(
            {
                endpoint.address
                for port in service.spec.ports
                for endpoint in index.get((host, port.port), ())
            }
        )
        vip = vips.get((service.namespace, service.name))
        records.append(
            ServiceRecord(
                name=service.name,
                namespace=service.namespace,
                addresses=(vip,) if vip else (),
                ports=ports,
                endpoints=tuple(endpoints),
                headless=headless,
            )
        )
    return records
