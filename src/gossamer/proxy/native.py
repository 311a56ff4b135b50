"""The proxy's hot path compiled to C with mypyc, and the guard that keeps it honest.

The modules a request runs through (`MODULES`) are plain, `mypy --strict` clean Python. Where a
C compiler is at hand, `python -m gossamer.proxy.compile` (run by `make`) compiles them with
mypyc into extension modules next to their sources. An extension is imported in place of its
`.py`, and runs the same code about a third faster.

An extension left over from older sources must never run instead of the sources a developer just
edited, so the build records a digest of the sources it compiled. When the `gossamer.proxy`
package is imported, `select` compares it with the sources on disk: if they differ (or
`GOSSAMER_PURE_PYTHON` is set), every hot-path module is imported from its `.py` instead, all
of them together, since compiled modules call each other directly. `MODE` says which ran.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Literal

MODULES = (
    "headers",
    "codec",
    "http1",
    "http2",
    "stats",
    "tracing",
    "timers",
    "balancer",
    "cors",
    "router",
    "cluster",
    "retry_state",
    "replay",
    "upstream",
    "attempt",
    "forwarding",
    "dispatch",
    "exchange",
    "tunnel",
    "rejection",
    "mirror",
    "budget",
    "apiproduct",
    "http2_stream",
    "http2_connection",
    "downstream",
    "listener",
    "guard",
    "server",
)
"""The modules compiled, all in one group (calls between them are C calls)."""

PACKAGE = "gossamer.proxy"
GROUP = f"{PACKAGE}.hotpath"
"""The group's shared library is `hotpath__mypyc` in this package."""
PACKAGE_DIR = Path(__file__).resolve().parent
DIGEST_FILE = "hotpath.digest"
PURE_ENV = "GOSSAMER_PURE_PYTHON"

Mode = Literal["compiled", "pure", "stale"]
"""compiled: the extensions run. pure: there are none (or `GOSSAMER_PURE_PYTHON` is set).
stale: there are extensions, but built from other sources than those on disk; the sources run."""

MODE: Mode = "pure"


def source_digest(directory: Path = PACKAGE_DIR) -> str:
    """Each hot-path source's name, length and CRC-32, in `MODULES` order.

    It tells an edited source from the one compiled, not an attacker's from ours (the files are
    as trusted as the code reading them); hashlib would cost every proxy 1.9 MB of OpenSSL."""
    parts = []
    for name in MODULES:
        source = (directory / f"{name}.py").read_bytes()
        parts.append(f"{name}:{len(source)}:{zlib.crc32(source):08x}")
    return " ".join(parts)


def extension_files(directory: Path = PACKAGE_DIR) -> list[Path]:
    """The compiled files this interpreter would import from `directory`."""
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    names = [*MODULES, GROUP.rpartition(".")[2] + "__mypyc"]
    return [
        directory / f"{name}{suffix}"
        for name in names
        for suffix in suffixes
        if (directory / f"{name}{suffix}").exists()
    ]


def state(directory: Path = PACKAGE_DIR) -> Mode:
    """Whether `directory` holds extensions built from the sources it holds now."""
    if not extension_files(directory):
        return "pure"
    try:
        built = (directory / DIGEST_FILE).read_text().strip()
    except OSError:
        return "stale"
    return "compiled" if built == source_digest(directory) else "stale"


class _SourceFinder:
    """Imports the hot-path modules from their `.py` files even where extensions exist."""

    def __init__(self, directory: Path) -> None:
        self.paths = {f"{PACKAGE}.{name}": directory / f"{name}.py" for name in MODULES}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self.paths.get(fullname)
        if source is None:
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def select() -> Mode:
    """Decide, once and before any hot-path module is imported, which of them run."""
    global MODE  # noqa: PLW0603 - set once, at the package's import
    if any(f"{PACKAGE}.{name}" in sys.modules for name in MODULES):
        return MODE
    found = state()
    if found == "compiled" and os.environ.get(PURE_ENV):
        found = "pure"
    if found != "compiled" and extension_files():
        sys.meta_path.insert(0, _SourceFinder(PACKAGE_DIR))
    MODE = found
    return MODE


def describe() -> str:
    """One line for a log or a benchmark table."""
    if MODE == "compiled":
        return "compiled (mypyc)"
    if MODE == "stale":
        return "pure Python: the compiled modules are older than their sources (run `make`)"
    return "pure Python"
