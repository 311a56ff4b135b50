"""Gossamer: a service mesh for a handful to a few hundred services."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # The version is read on demand: importlib.metadata costs a sidecar megabytes it never uses.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

        try:
            return version("gossamer")
        except PackageNotFoundError:  # a source tree that was never installed
            return "0.0.0+unknown"
    raise AttributeError(name)


__all__ = ["__version__"]
