"""Which store to open: `sqlite:FILE` or `etcd://HOST:PORT[/PREFIX/]`, parsed once, then opened."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gossamer.control.store.etcd import EtcdStore
from gossamer.control.store.etcd_gateway import EtcdSettings
from gossamer.control.store.model import Store, StoreSettings
from gossamer.control.store.sqlite import SqliteStore


@dataclass(frozen=True, slots=True)
class SqliteLocation:
    """A sqlite file."""

    path: Path

    def __str__(self) -> str:
        return f"sqlite:{self.path}"


@dataclass(frozen=True, slots=True)
class EtcdLocation:
    """One etcd member's client URL and the key prefix of this control plane."""

    endpoint: str
    prefix: str = "/gossamer/"

    def __str__(self) -> str:
        prefix = "" if self.prefix == "/gossamer/" else self.prefix.rstrip("/")
        return self.endpoint.replace("http://", "etcd://", 1) + prefix


StoreLocation = SqliteLocation | EtcdLocation


def parse_location(text: str) -> StoreLocation:
    """`sqlite:state/control.db` or `etcd://127.0.0.1:2379` (optionally `/PREFIX`)."""
    if text.startswith("sqlite:"):
        path = text.removeprefix("sqlite:").removeprefix("//")
        if not path:
            raise ValueError("sqlite: needs a file, e.g. sqlite:state/control.db")
        return SqliteLocation(Path(path))
    if text.startswith("etcd://"):
        parts = urlsplit(text)
        if not parts.hostname or parts.port is None or parts.query or parts.fragment:
            raise ValueError(f"expected etcd://HOST:PORT[/PREFIX], not {text!r}")
        prefix = parts.path.rstrip("/") + "/" if parts.path.strip("/") else "/gossamer/"
        return EtcdLocation(f"http://{parts.netloc}", prefix)
    raise ValueError(f"expected sqlite:FILE or etcd://HOST:PORT, not {text!r}")


async def open_store(location: StoreLocation, settings: StoreSettings | None = None) -> Store:
    """Open the store a location names."""
    if isinstance(location, SqliteLocation):
        return await SqliteStore.open(location.path, settings)
    return await EtcdStore.open(EtcdSettings(location.endpoint, location.prefix), settings)
