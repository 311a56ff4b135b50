"""`--store` values parse into locations, and bad ones say what is expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from gossamer.control.server import ControlPlaneConfig, Listen
from gossamer.control.store.location import EtcdLocation, SqliteLocation, parse_location


@pytest.mark.parametrize(
    ("text", "location"),
    [
        ("sqlite:state/store.db", SqliteLocation(Path("state/store.db"))),
        ("sqlite:///var/lib/g.db", SqliteLocation(Path("/var/lib/g.db"))),
        ("etcd://127.0.0.1:2379", EtcdLocation("http://127.0.0.1:2379", "/gossamer/")),
        ("etcd://etcd:2379/mesh-a", EtcdLocation("http://etcd:2379", "/mesh-a/")),
        ("etcd://etcd:2379/", EtcdLocation("http://etcd:2379", "/gossamer/")),
    ],
)
def test_store_locations_parse(text: str, location: object) -> None:
    assert parse_location(text) == location
    assert parse_location(str(location)) == location


@pytest.mark.parametrize("text", ["sqlite:", "etcd://host", "etcd://:2379", "mysql://x", "x.db"])
def test_bad_store_locations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected|needs"):
        parse_location(text)


def test_the_default_store_is_sqlite_in_the_state_folder() -> None:
    config = ControlPlaneConfig.from_options(Path("st"), None, "127.0.0.1:0")
    assert config.store_location == SqliteLocation(Path("st/store.db"))
    assert config.listen == Listen("127.0.0.1", 0)
    assert Listen.parse(":15010") == Listen("0.0.0.0", 15010)
    with pytest.raises(ValueError, match="HOST:PORT"):
        Listen.parse("localhost")
