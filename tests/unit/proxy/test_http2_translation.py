"""HTTP/2 header lists in, HTTP/1.1 request heads (or refusals) out: RFC 9113 8.2 and 8.3."""

from __future__ import annotations

import pytest

from gossamer.proxy.http1 import RequestHead
from gossamer.proxy.http2 import (
    PREFACE,
    FrameLengths,
    HeaderRules,
    Refused,
    after_preface,
    local_headers,
    response_headers,
    trailer_fields,
    trailers_problem,
    translate_request,
)

RULES = HeaderRules(max_header_bytes=1000, max_headers=20, drop_underscores=True)
BASE = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"reviews:9080"),
    (b":path", b"/books?id=1"),
]


def head(fields: list[tuple[bytes, bytes]], *, end: bool = True) -> RequestHead:
    result, _ = translate_request(fields, end, RULES, 1.0)
    assert isinstance(result, RequestHead), result
    return result


def refused(fields: list[tuple[bytes, bytes]], *, end: bool = True) -> Refused:
    result, _ = translate_request(fields, end, RULES, 1.0)
    assert isinstance(result, Refused), result
    return result


def test_pseudo_headers_become_the_request_line_and_host() -> None:
    got = head([*BASE, (b"accept", b"*/*")])
    assert (got.method, got.target, got.version) == (b"GET", b"/books?id=1", "2")
    assert got.host == b"reviews:9080"
    assert got.hosts == 1
    assert got.headers == [(b"accept", b"*/*")]
    assert got.bodiless()
    assert got.started == 1.0


def test_a_body_without_length_goes_upstream_chunked() -> None:
    got = head(BASE, end=False)
    assert got.chunked
    assert not got.bodiless()


def test_a_body_with_length_keeps_it() -> None:
    got = head([*BASE, (b"content-length", b"12")], end=False)
    assert (got.chunked, got.content_length) == (False, 12)
    assert (b"content-length", b"12") in got.headers


def test_cookies_are_joined_again() -> None:
    got = head([*BASE, (b"cookie", b"a=1"), (b"x", b"y"), (b"cookie", b"b=2")])
    assert (b"cookie", b"a=1; b=2") in got.headers


def test_host_without_authority_is_the_authority() -> None:
    fields = [f for f in BASE if f[0] != b":authority"] + [(b"host", b"ratings")]
    assert head(fields).host == b"ratings"


def test_expect_continue_is_noticed() -> None:
    got = head([*BASE, (b"expect", b"100-continue"), (b"content-length", b"3")], end=False)
    assert got.expect_continue


def test_te_trailers_passes() -> None:
    assert (b"te", b"trailers") in head([*BASE, (b"te", b"trailers")]).headers


def test_underscore_names_are_dropped_and_counted() -> None:
    result, dropped = translate_request([*BASE, (b"x_user", b"root")], True, RULES, 0.0)
    assert isinstance(result, RequestHead)
    assert dropped == 1
    assert result.headers == []


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([*BASE, (b"connection", b"close")], "connection-specific"),
        ([*BASE, (b"transfer-encoding", b"chunked")], "connection-specific"),
        ([*BASE, (b"keep-alive", b"1")], "connection-specific"),
        ([*BASE, (b"proxy-connection", b"x")], "connection-specific"),
        ([*BASE, (b"upgrade", b"websocket")], "connection-specific"),
        ([*BASE, (b"te", b"gzip")], "te other than trailers"),
        ([*BASE, (b"X-Upper", b"1")], "upper-case"),
        ([*BASE, (b"bad name", b"1")], "bad header name"),
        ([*BASE, (b"", b"1")], "empty header name"),
        ([*BASE, (b"x-a", b"1\r\nx-b: 2")], "CR, LF or NUL"),
        ([*BASE, (b"x-a", b"nul\x00")], "CR, LF or NUL"),
        ([*BASE, (b"x-a", b" padded")], "surrounding whitespace"),
        ([(b"x-a", b"1"), *BASE], "pseudo-header after a field"),
        ([*BASE[:3], (b"x-a", b"1"), BASE[3]], "pseudo-header after a field"),
        ([(b":method", b"GET"), *BASE], "repeated ':method'"),
        ([*BASE[:3], (b":status", b"200"), BASE[3]], "unknown pseudo-header"),
        ([*BASE[:3], (b":protocol", b"websocket"), BASE[3]], "unknown pseudo-header"),
        (BASE[1:], "missing :method"),
        ([BASE[0], BASE[2], BASE[3]], "missing :scheme or :path"),
        (BASE[:3], "missing :scheme or :path"),
        ([*BASE[:3], (b":path", b"")], "missing :scheme or :path"),
        ([*BASE[:3], (b":path", b"books")], "bad :path"),
        ([*BASE[:3], (b":path", b"/a\r\nb")], "CR, LF or NUL in ':path'"),
        ([BASE[0], BASE[1], BASE[3]], "missing :authority"),
        ([*BASE, (b"host", b"elsewhere")], "host differs"),
        ([BASE[0], BASE[1], (b":authority", b"u@h"), BASE[3]], "userinfo"),
        ([*BASE, (b"content-length", b"1"), (b"content-length", b"2")], "conflicting"),
        ([*BASE, (b"content-length", b"-1")], "bad content-length"),
        ([*BASE, (b"content-length", b"1, 1")], "bad content-length"),
    ],
)
def test_malformed_requests_are_refused_with_400(
    fields: list[tuple[bytes, bytes]], reason: str
) -> None:
    got = refused(fields, end=False)
    assert got.status == 400
    assert reason in got.reason


def test_a_length_with_no_body_is_malformed() -> None:
    got = refused([*BASE, (b"content-length", b"5")], end=True)
    assert (got.status, got.reason) == (400, "content-length with no body")


def test_connect_is_not_supported() -> None:
    fields = [(b":method", b"CONNECT"), (b":authority", b"db:5432")]
    assert refused(fields).status == 501


def test_options_star_is_a_target() -> None:
    assert head([(b":method", b"OPTIONS"), *BASE[1:3], (b":path", b"*")]).target == b"*"


def test_headers_over_the_limits_get_431() -> None:
    big = refused([*BASE, (b"x-big", b"v" * 1000)])
    many = refused([*BASE, *[(b"x-%d" % i, b"1") for i in range(20)]])
    assert (big.status, many.status) == (431, 431)


def test_trailers_may_not_carry_pseudo_or_connection_fields() -> None:
    assert trailers_problem([(b"x-checksum", b"abc")]) is None
    assert trailers_problem([(b":path", b"/")]) == "pseudo-header in trailers"
    assert "connection-specific" in (trailers_problem([(b"transfer-encoding", b"x")]) or "")


def test_responses_lose_hop_by_hop_fields_and_capitals() -> None:
    fields = [
        (b"Content-Type", b"text/plain"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Content-Length", b"3"),
    ]
    assert response_headers(200, fields) == [
        (b":status", b"200"),
        (b"content-type", b"text/plain"),
        (b"content-length", b"3"),
    ]
    assert trailer_fields([(b"Grpc-Status", b"0"), (b"Trailer", b"x")]) == [(b"grpc-status", b"0")]


def test_local_replies_say_why() -> None:
    fields = local_headers(503, "no healthy upstream", b"no healthy upstream\n", None)
    assert fields[:3] == [
        (b":status", b"503"),
        (b"content-length", b"20"),
        (b"x-gossamer-reason", b"no healthy upstream"),
    ]
    assert (b"content-type", b"text/plain; charset=utf-8") in fields


@pytest.mark.parametrize("cut", range(len(PREFACE)))
def test_the_preface_is_found_however_it_was_split(cut: int) -> None:
    assert after_preface(PREFACE[cut:] + b"\x00\x00\x12frames") == b"\x00\x00\x12frames"


def test_other_bytes_are_no_preface() -> None:
    assert after_preface(b"GET / HTTP/1.1\r\n\r\n") is None


def test_frame_lengths_follow_frames_across_chunks() -> None:
    lengths = FrameLengths(16384)
    stream = PREFACE + frame(4, b"") + frame(0, b"x" * 16384) + frame(1, b"abc")
    for at in range(0, len(stream), 7):
        assert lengths.feed(stream[at : at + 7])
    assert (lengths.left, lengths.header) == (0, b"")


def test_frame_lengths_refuse_a_frame_over_the_limit_from_its_header() -> None:
    lengths = FrameLengths(16384)
    assert lengths.feed(PREFACE + frame(4, b""))
    assert lengths.feed(b"\x00\x40")  # a header cut short says nothing yet
    assert not lengths.feed(b"\x01\x00\x00\x00\x00\x00\x01")  # 16,385 bytes announced


def frame(kind: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, 0]) + b"\x00\x00\x00\x01" + payload
