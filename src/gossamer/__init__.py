"""Gossamer: a service mesh for a handful to a few hundred services."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gossamer")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
