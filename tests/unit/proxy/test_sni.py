"""The server name of real ClientHellos (made by Python's ssl into memory), whole, cut short,
spread over records, absent, and bytes that are not TLS at all."""

from __future__ import annotations

import ssl

import pytest

from gossamer.proxy.sni import MAX_HELLO_BYTES, NEED_MORE, NOT_TLS, SniResult, read_sni


def client_hello(server_name: str | None) -> bytes:
    context = ssl.create_default_context()
    if server_name is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_the_name_a_client_asks_for() -> None:
    hello = client_hello("Shop.Example.COM")
    assert read_sni(hello) == SniResult(server_name="shop.example.com")
    # Whatever follows the ClientHello does not matter.
    assert read_sni(hello + b"\x17\x03\x03").server_name == "shop.example.com"


def test_every_cut_short_hello_asks_for_more() -> None:
    hello = client_hello("shop.example.com")
    assert all(read_sni(hello[:cut]) is NEED_MORE for cut in range(1, len(hello)))
    assert read_sni(b"") is NEED_MORE


def test_a_hello_over_two_records_is_joined() -> None:
    hello = client_hello("shop.example.com")
    body = hello[5:]
    head = hello[:3]
    first, second = body[:40], body[40:]
    split = (
        head
        + len(first).to_bytes(2, "big")
        + first
        + head
        + len(second).to_bytes(2, "big")
        + second
    )
    assert read_sni(split).server_name == "shop.example.com"
    assert read_sni(split[:-1]) is NEED_MORE


def test_a_hello_without_a_name() -> None:
    assert read_sni(client_hello(None)) == SniResult(server_name="")


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00",  # a ServerHello, not a ClientHello
        b"\x16\x03\x01\x00\x00",  # an empty record
        b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03\xff\xff",  # cut inside its own length
        b"\x16\x03\x01\xff\xff" + b"\x01\xff\xff\xff",  # a hello larger than any record
    ],
)
def test_what_is_not_a_client_hello(data: bytes) -> None:
    assert read_sni(data) is NOT_TLS


def test_a_hello_that_never_ends_is_not_waited_for_past_the_bound() -> None:
    record = b"\x16\x03\x01\x40\x00" + b"\x01\x00\x40\x00" + b"\x00" * (0x4000 - 4)
    assert len(record) == MAX_HELLO_BYTES
    assert read_sni(record) is NOT_TLS
