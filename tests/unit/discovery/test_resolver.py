"""The mesh DNS answers service names the way Kubernetes DNS does (sans-IO: message in, out)."""

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from gossamer.discovery import DnsConfig, MemoryDirectory, PortRecord, ServiceRecord, answer
from gossamer.discovery.resolver import OutsideError

DIRECTORY = MemoryDirectory(
    [
        ServiceRecord(
            "reviews",
            "default",
            addresses=("127.77.0.10",),
            ports=(PortRecord("http", 9080), PortRecord("grpc", 9090)),
        ),
        ServiceRecord(
            "ratings",
            "prod",
            addresses=("127.77.0.11", "fd00::11"),
            ports=(PortRecord("http", 8080),),
        ),
        ServiceRecord(
            "db",
            "prod",
            headless=True,
            endpoints=("127.0.0.5", "127.0.0.6"),
            ports=(PortRecord("pg", 5432),),
        ),
    ]
)
CONFIG = DnsConfig()


def ask(name: str, rdtype: str = "A") -> dns.message.Message:
    return answer(dns.message.make_query(name, rdtype), DIRECTORY, CONFIG)


def addresses(response: dns.message.Message) -> list[str]:
    return sorted(r.to_text() for rrset in response.answer for r in rrset)


@pytest.mark.parametrize(
    "name",
    [
        "reviews",
        "reviews.default",
        "reviews.default.svc",
        "reviews.default.svc.cluster.local",
        "REVIEWS.Default.svc.cluster.local.",
    ],
)
def test_every_kubernetes_form_of_a_name_resolves(name: str) -> None:
    response = ask(name)
    assert response.rcode() == dns.rcode.NOERROR
    assert addresses(response) == ["127.77.0.10"]


def test_aaaa_answers_the_ipv6_address_only() -> None:
    assert addresses(ask("ratings.prod.svc.cluster.local", "AAAA")) == ["fd00::11"]
    assert addresses(ask("ratings.prod", "A")) == ["127.77.0.11"]


def test_srv_lists_ports_and_adds_the_address() -> None:
    response = ask("reviews.default.svc.cluster.local", "SRV")
    records = sorted(r.to_text() for r in response.answer[0])
    assert records == [
        "0 100 9080 reviews.default.svc.cluster.local.",
        "0 100 9090 reviews.default.svc.cluster.local.",
    ]
    assert [r.to_text() for r in response.additional[0]] == ["127.77.0.10"]


def test_srv_for_a_named_port() -> None:
    response = ask("_grpc._tcp.reviews.default.svc.cluster.local", "SRV")
    assert [r.to_text() for r in response.answer[0]] == [
        "0 100 9090 reviews.default.svc.cluster.local."
    ]
    missing = ask("_nope._tcp.reviews.default.svc.cluster.local", "SRV")
    assert missing.rcode() == dns.rcode.NXDOMAIN


def test_headless_services_answer_with_their_endpoints() -> None:
    assert addresses(ask("db.prod.svc.cluster.local")) == ["127.0.0.5", "127.0.0.6"]


@pytest.mark.parametrize(
    "name",
    [
        "nothing.default.svc.cluster.local",
        "reviews.prod.svc.cluster.local",
        "a.b.c.cluster.local",
        "nothing",
        "nothing.prod",
    ],
)
def test_unknown_names_of_the_mesh_are_nxdomain_with_a_soa(name: str) -> None:
    response = ask(name)
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.authority[0].rdtype == dns.rdatatype.SOA


@pytest.mark.parametrize("name", ["example.com", "reviews.example.com", "www.default.org"])
def test_outside_names_are_not_answered_here(name: str) -> None:
    with pytest.raises(OutsideError):
        ask(name)
