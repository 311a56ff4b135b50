"""Kubernetes `v1` Service: a name, its ports and the selector that finds its workloads."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from gossamer.resources.base import (
    Finding,
    IntOrString,
    Labels,
    Model,
    Port,
    Resource,
    ranged,
)

Protocol = Literal["TCP", "UDP", "SCTP"]
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


class ServicePort(Model):
    """A port the Service exposes and the workload port it reaches (targetPort)."""

    name: str | None = None
    protocol: Protocol = "TCP"
    app_protocol: str | None = None
    port: Port
    target_port: IntOrString | None = None
    node_port: Annotated[int, ranged(1, 65535)] | None = None

    @property
    def effective_target(self) -> IntOrString:
        """Where traffic goes on the workload: targetPort, defaulting to port."""
        return self.port if self.target_port is None else self.target_port


class ClientIPConfig(Model):
    """How long a client sticks to one endpoint under sessionAffinity ClientIP."""

    timeout_seconds: Annotated[int, ranged(1, 86400)] | None = None


class SessionAffinityConfig(Model):
    """Session affinity settings."""

    client_ip: ClientIPConfig | None = Field(default=None, alias="clientIP")


class ServiceSpec(Model):
    """Every field of the Kubernetes ServiceSpec reference."""

    ports: list[ServicePort] = Field(default_factory=list)
    selector: Labels | None = None
    cluster_ip: str | None = Field(default=None, alias="clusterIP")
    cluster_ips: list[str] = Field(default_factory=list, alias="clusterIPs")
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = "ClusterIP"
    external_ips: list[str] = Field(default_factory=list, alias="externalIPs")
    session_affinity: Literal["None", "ClientIP"] = "None"
    load_balancer_ip: str | None = Field(default=None, alias="loadBalancerIP")
    load_balancer_source_ranges: list[str] = Field(default_factory=list)
    external_name: str | None = None
    external_traffic_policy: Literal["Cluster", "Local"] | None = None
    health_check_node_port: Port | None = None
    publish_not_ready_addresses: bool = False
    session_affinity_config: SessionAffinityConfig | None = None
    ip_families: list[Literal["IPv4", "IPv6"]] = Field(default_factory=list)
    ip_family_policy: Literal["SingleStack", "PreferDualStack", "RequireDualStack"] | None = None
    allocate_load_balancer_node_ports: bool | None = None
    load_balancer_class: str | None = None
    internal_traffic_policy: Literal["Cluster", "Local"] | None = None
    traffic_distribution: str | None = None


class Service(Resource):
    """`v1` Service."""

    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = "Service"
    PLURAL: ClassVar[str] = "services"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    spec: ServiceSpec = Field(default_factory=ServiceSpec)

    def check(self) -> Iterator[Finding]:
        """Kubernetes' own Service rules: a DNS-1035 name, named and distinct ports."""
        if not _DNS_1035.fullmatch(self.name):
            yield Finding(
                ("metadata", "name"),
                "a Service name must start with a letter and be at most 63 lowercase letters, "
                "digits and '-'",
            )
        ports = self.spec.ports
        seen: dict[tuple[int, str], int] = {}
        names: dict[str, int] = {}
        for index, port in enumerate(ports):
            path = ("spec", "ports", index)
            if len(ports) > 1 and port.name is None:
                yield Finding((*path, "port"), "name is required when a Service has several ports")
            if port.name is not None:
                if port.name in names:
                    yield Finding((*path, "name"), f"also names spec.ports[{names[port.name]}]")
                names.setdefault(port.name, index)
            key = (port.port, port.protocol)
            if key in seen:
                yield Finding(
                    (*path, "port"),
                    f"{port.port}/{port.protocol} is already spec.ports[{seen[key]}]",
                )
            seen.setdefault(key, index)
        if self.spec.type == "ExternalName" and not self.spec.external_name:
            yield Finding(("spec", "type"), "type ExternalName needs spec.externalName")
