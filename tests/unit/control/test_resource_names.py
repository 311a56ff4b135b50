"""The names the CLI takes for a kind, and the short ages its tables print."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gossamer.cli.columns import age, time_left
from gossamer.cli.resource_names import (
    ResourceNames,
    UnknownResourceError,
    object_ref,
    split_kind_name,
)
from gossamer.control.api.catalog import Catalog

NAMES = ResourceNames(Catalog())


@pytest.mark.parametrize(
    ("given", "group", "version", "plural"),
    [
        ("VirtualService", "networking.istio.io", "v1", "virtualservices"),
        ("virtualservice", "networking.istio.io", "v1", "virtualservices"),
        ("VIRTUALSERVICES", "networking.istio.io", "v1", "virtualservices"),
        ("vs", "networking.istio.io", "v1", "virtualservices"),
        ("virtualservices.networking.istio.io", "networking.istio.io", "v1", "virtualservices"),
        ("svc", "", "v1", "services"),
        ("deploy", "apps", "v1", "deployments"),
        ("ing", "networking.k8s.io", "v1", "ingresses"),
        ("ingresses.extensions", "extensions", "v1beta1", "ingresses"),
        ("dr", "networking.istio.io", "v1", "destinationrules"),
        ("gw", "networking.istio.io", "v1", "gateways"),
        ("se", "networking.istio.io", "v1", "serviceentries"),
        ("pa", "security.istio.io", "v1", "peerauthentications"),
        ("ap", "security.istio.io", "v1", "authorizationpolicies"),
        ("ra", "security.istio.io", "v1", "requestauthentications"),
        ("topic", "gossamer.dev", "v1alpha1", "topics"),
        ("ApiProducts", "gossamer.dev", "v1alpha1", "apiproducts"),
    ],
)
def test_a_kind_is_found_by_any_of_its_names_at_its_most_stable_version(
    given: str, group: str, version: str, plural: str
) -> None:
    served = NAMES.resolve(given)
    assert (served.group, served.version, served.plural) == (group, version, plural)


def test_an_unknown_name_lists_what_is_served() -> None:
    with pytest.raises(UnknownResourceError) as raised:
        NAMES.resolve("widgets")
    message = str(raised.value)
    assert message.startswith('the server doesn\'t have a resource type "widgets" (it serves ')
    assert "virtualservices (vs)" in message
    assert "services (svc)" in message


def test_objects_are_named_as_kubectl_names_them() -> None:
    assert object_ref(NAMES.resolve("svc"), "reviews") == "service/reviews"
    assert (
        object_ref(NAMES.resolve("vs"), "reviews") == "virtualservice.networking.istio.io/reviews"
    )
    # What `get -o name` prints is a name `get` takes.
    assert split_kind_name("virtualservice.networking.istio.io/reviews", None) == (
        "virtualservice.networking.istio.io",
        "reviews",
    )
    assert split_kind_name("vs", "reviews") == ("vs", "reviews")


NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ago", "shown"),
    [
        (timedelta(seconds=42), "42s"),
        (timedelta(minutes=3, seconds=12), "3m12s"),
        (timedelta(minutes=25), "25m"),
        (timedelta(hours=4, minutes=10), "4h10m"),
        (timedelta(hours=17), "17h"),
        (timedelta(days=3, hours=4), "3d4h"),
        (timedelta(days=45), "45d"),
        (timedelta(days=800), "2y"),
    ],
)
def test_ages_are_short_like_kubectl_prints_them(ago: timedelta, shown: str) -> None:
    created = (NOW - ago).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert age(created, NOW) == shown


def test_an_object_without_a_creation_time_has_no_age() -> None:
    assert age(None, NOW) == "<none>"
    assert age("yesterday", NOW) == "<none>"


@pytest.mark.parametrize(
    ("left", "shown"),
    [
        (86400.0, "24h00m"),
        (86399.0, "23h59m"),
        (61.0, "0h01m"),
        (0.0, "EXPIRED"),
        (-5.0, "EXPIRED"),
    ],
)
def test_a_certificate_shows_the_hours_and_minutes_it_has_left(left: float, shown: str) -> None:
    assert time_left(1_000_000.0 + left, 1_000_000.0) == shown
