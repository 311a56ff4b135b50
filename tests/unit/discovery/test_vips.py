"""Virtual IPs: stable, in the network, honouring clusterIP, none for headless Services."""

from __future__ import annotations

import ipaddress

from gossamer.resources import load_text
from gossamer.resources.kinds.core import Service
from gossamer.snapshot.vips import assign_vips, services_of


def services(*docs: str) -> list[Service]:
    loaded = load_text("---\n".join(docs), "services.yaml")
    assert not loaded.problems, loaded.problems
    return services_of(item.resource for item in loaded.resources)


def service(name: str, namespace: str = "default", cluster_ip: str | None = None) -> str:
    ip = f"\n  clusterIP: {cluster_ip!r}" if cluster_ip else ""
    return (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec:\n  ports: [{{port: 80}}]{ip}\n"
    )


def test_every_service_gets_an_address_in_the_network_and_keeps_it_when_others_come() -> None:
    few = assign_vips(services(service("a"), service("b")))
    many = assign_vips(
        services(*(service(f"s{i}") for i in range(300)), service("a"), service("b"))
    )
    network = ipaddress.ip_network("127.77.0.0/16")
    assert len(set(many.values())) == 302
    assert all(ipaddress.ip_address(ip) in network for ip in many.values())
    assert many[("default", "a")] == few[("default", "a")]
    assert many[("default", "b")] == few[("default", "b")]


def test_a_cluster_ip_in_the_network_is_kept_and_headless_services_get_none() -> None:
    vips = assign_vips(
        services(service("fixed", cluster_ip="127.77.1.1"), service("db", cluster_ip="None"))
    )
    assert vips == {("default", "fixed"): "127.77.1.1"}


def test_the_same_name_in_two_namespaces_gets_two_addresses() -> None:
    vips = assign_vips(services(service("api", "one"), service("api", "two")))
    assert vips[("one", "api")] != vips[("two", "api")]
