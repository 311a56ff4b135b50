"""When the proxy renews its certificate: half of its life from issue, not from notBefore."""

from __future__ import annotations

from pathlib import Path

from gossamer.proxy.agent import RENEW_AT, RENEW_JITTER, Certificate

ISSUED = 1_800_000_000.0
SPIFFE = "spiffe://cluster.local/ns/default/sa/web"


def certificate(lifetime: float, *, ratio: float = RENEW_AT) -> Certificate:
    # The CA back-dates notBefore by a minute for peers' clock skew.
    return Certificate(
        SPIFFE,
        Path("cert.pem"),
        Path("key.pem"),
        not_before=ISSUED - 60,
        not_after=ISSUED + lifetime,
        received=ISSUED,
        renew_ratio=ratio,
    )


def test_a_one_minute_certificate_is_renewed_after_thirty_seconds_not_at_once() -> None:
    assert certificate(60).renew_at() == ISSUED + 30


def test_a_day_long_certificate_is_renewed_after_twelve_hours() -> None:
    assert certificate(86400).renew_at() == ISSUED + 43200


def test_jitter_keeps_renewal_within_five_percent_of_half_life() -> None:
    early = certificate(600, ratio=RENEW_AT - RENEW_JITTER).renew_at()
    late = certificate(600, ratio=RENEW_AT + RENEW_JITTER).renew_at()
    assert (early, late) == (ISSUED + 270, ISSUED + 330)
