"""The mesh DNS on real sockets: a real `dig` and dnspython over UDP and TCP, and forwarding."""

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import pytest

from gossamer.discovery import DnsConfig, DnsServer, MemoryDirectory, PortRecord, ServiceRecord

RECORDS = [
    ServiceRecord(
        "reviews", "default", addresses=("127.77.0.10",), ports=(PortRecord("http", 9080),)
    ),
    ServiceRecord("bulk", "default", addresses=tuple(f"127.77.1.{n}" for n in range(1, 60))),
]


@pytest.fixture
async def server() -> AsyncIterator[DnsServer]:
    dns_server = DnsServer(MemoryDirectory(RECORDS), port=0)
    await dns_server.start()
    yield dns_server
    await dns_server.close()


def dig(port: int, *args: str) -> str:
    binary = shutil.which("dig")
    if binary is None:
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "dnsutils"], check=True, capture_output=True
        )
        binary = "dig"
    result = subprocess.run(
        [binary, "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return result.stdout


async def test_dig_resolves_a_service_over_udp_and_tcp(server: DnsServer) -> None:
    udp = await asyncio.to_thread(dig, server.port, "+short", "reviews.default.svc.cluster.local")
    tcp = await asyncio.to_thread(
        dig, server.port, "+tcp", "+short", "reviews.default.svc.cluster.local"
    )
    assert udp.split() == ["127.77.0.10"]
    assert tcp.split() == ["127.77.0.10"]
    srv = await asyncio.to_thread(
        dig, server.port, "+short", "SRV", "reviews.default.svc.cluster.local"
    )
    assert srv.split() == ["0", "100", "9080", "reviews.default.svc.cluster.local."]
    missing = await asyncio.to_thread(dig, server.port, "nothing.default.svc.cluster.local")
    assert "status: NXDOMAIN" in missing


async def test_dnspython_client_and_truncation_to_tcp(server: DnsServer) -> None:
    response = await dns.asyncquery.udp(
        dns.message.make_query("reviews", "A"), "127.0.0.1", port=server.port, timeout=2
    )
    assert [r.to_text() for r in response.answer[0]] == ["127.77.0.10"]
    big = dns.message.make_query("bulk.default.svc.cluster.local", "A")
    truncated = await dns.asyncquery.udp(
        big,
        "127.0.0.1",
        port=server.port,
        timeout=2,
        ignore_trailing=True,
        raise_on_truncation=False,
    )
    assert truncated.flags & dns.flags.TC
    full = await dns.asyncquery.tcp(big, "127.0.0.1", port=server.port, timeout=2)
    assert len(full.answer[0]) == 59


async def test_outside_names_are_forwarded_or_refused(server: DnsServer) -> None:
    upstream = DnsServer(
        MemoryDirectory([ServiceRecord("www", "example", addresses=("127.9.9.9",))]),
        DnsConfig(domain="example.test", default_namespace="example"),
        port=0,
    )
    await upstream.start()
    forwarding = DnsServer(
        MemoryDirectory(RECORDS), DnsConfig(forwarders=(f"127.0.0.1:{upstream.port}",)), port=0
    )
    await forwarding.start()
    try:
        query = dns.message.make_query("www.example.svc.example.test", "A")
        forwarded = await dns.asyncquery.udp(query, "127.0.0.1", port=forwarding.port, timeout=3)
        assert [r.to_text() for r in forwarded.answer[0]] == ["127.9.9.9"]
        refused = await dns.asyncquery.udp(query, "127.0.0.1", port=server.port, timeout=3)
        assert refused.rcode() == dns.rcode.REFUSED
    finally:
        await forwarding.close()
        await upstream.close()


async def test_garbage_is_dropped_and_the_server_keeps_answering(server: DnsServer) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=("127.0.0.1", server.port)
    )
    transport.sendto(b"\x00\x01garbage")
    transport.close()
    response = await dns.asyncquery.udp(
        dns.message.make_query("reviews", "A"), "127.0.0.1", port=server.port, timeout=2
    )
    assert response.rcode() == dns.rcode.NOERROR
    assert server.counters["malformed"] == 1
