"""Gossamer's build: wheels carry the proxy's hot path compiled with mypyc, as black's do.

pyproject.toml holds the project's metadata and names this file as its build backend too:
setuptools' own PEP 517 hooks, except that a wheel which is to be compiled asks for mypy and the
runtime dependencies (mypyc compiles with the types they declare, as `make native` does). Run by
setuptools, it adds the compile step.

Where a C compiler and Python's headers are found, a wheel holds `gossamer/proxy/*.so` beside
the sources and the digest of the sources they were compiled from (`gossamer.proxy.native`),
and is tagged for this interpreter and platform (cp311-cp311-linux_x86_64). Without them, or
with GOSSAMER_PURE_PYTHON=1, it is a pure-Python wheel (py3-none-any) of the same sources. A
source tree whose hot path `make native` compiled from the same sources gives the wheel its
extensions instead of compiling them again; an sdist carries none, so a wheel built from it is
always compiled afresh. An editable install compiles nothing: `make native` does, in place.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from setuptools import build_meta
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
PROXY = ROOT / "src" / "gossamer" / "proxy"
PURE_ENV = "GOSSAMER_PURE_PYTHON"


def _native() -> ModuleType:
    """`gossamer.proxy.native` (standard library only) without importing the package.

    It is read when the build runs, so `MODULES` is whatever the sources list then."""
    spec = importlib.util.spec_from_file_location("_gossamer_native", PROXY / "native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compile_problem() -> str | None:
    """Why this build makes a pure-Python wheel, or None when it compiles the hot path."""
    if os.environ.get(PURE_ENV):
        return f"{PURE_ENV} is set"
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler}) on PATH"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.exists():
        return f"Python's C headers are missing ({headers})"
    return None


def _compile_requirements() -> list[str]:
    if compile_problem() is not None:
        return []
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return ["mypy>=1.11", *project["dependencies"]]


# PEP 517 hooks: setuptools' own, with what compiling needs added to a wheel's requirements.
build_sdist = build_meta.build_sdist
build_wheel = build_meta.build_wheel
get_requires_for_build_sdist = build_meta.get_requires_for_build_sdist
prepare_metadata_for_build_wheel = build_meta.prepare_metadata_for_build_wheel
prepare_metadata_for_build_editable = build_meta.prepare_metadata_for_build_editable


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    """setuptools' requirements, and mypy with the runtime dependencies when compiling."""
    return [*build_meta.get_requires_for_build_wheel(config_settings), *_compile_requirements()]


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    """setuptools' requirements only: an editable install compiles nothing."""
    with _pure():
        return build_meta.get_requires_for_build_editable(config_settings)


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """A pure editable wheel, as before wheels were compiled; `make native` compiles in place."""
    with _pure():
        return build_meta.build_editable(wheel_directory, config_settings, metadata_directory)


@contextlib.contextmanager
def _pure() -> Iterator[None]:
    """GOSSAMER_PURE_PYTHON=1 for the duration of a hook."""
    before = os.environ.get(PURE_ENV)
    os.environ[PURE_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ[PURE_ENV]
        else:
            os.environ[PURE_ENV] = before


class CompileHotPath(build_ext):
    """Compiles the hot-path modules that build_py copied into the wheel's tree, in that tree."""

    def run(self) -> None:
        if self.inplace or getattr(self, "editable_mode", False):
            return
        native = _native()
        target = Path(self.build_lib) / "gossamer" / "proxy"
        for stale in target.iterdir():  # a previous build's, perhaps of modules since dropped
            if stale.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
                stale.unlink()
        (target / native.DIGEST_FILE).unlink(missing_ok=True)
        if _reuse(native, PROXY, target):
            print(f"hot path: the extensions compiled in {PROXY} (same sources)")
        else:
            print(f"hot path: compiling {len(native.MODULES)} modules with mypyc")
            # In a process of its own, which imports the package being built, not an installed one.
            # No bytecode: the wheel holds what build_py copied and the extensions, nothing else.
            command = [sys.executable, "-m", "gossamer.proxy.compile", "build"]
            env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
            subprocess.run(command, cwd=self.build_lib, env=env, check=True)
        if native.state(target) != "compiled":
            raise RuntimeError(f"the hot path in {target} is {native.state(target)}")


def _reuse(native: ModuleType, tree: Path, target: Path) -> bool:
    """Copy `tree`'s extensions into `target` if they were compiled from `target`'s sources."""
    if native.state(tree) != "compiled":
        return False
    recorded = (tree / native.DIGEST_FILE).read_text()
    if recorded.strip() != native.source_digest(target):
        return False
    for extension in native.extension_files(tree):
        shutil.copy2(extension, target / extension.name)
    (target / native.DIGEST_FILE).write_text(recorded)
    # If the tree's sources changed meanwhile (a `make native` there may be replacing its
    # extensions one by one, then its record), the copies could be a mix: compile instead.
    if native.state(tree) != "compiled":
        return False
    return bool((tree / native.DIGEST_FILE).read_text() == recorded)


if __name__ == "__main__":
    from setuptools import Distribution, setup

    compiled = compile_problem() is None

    class GossamerDistribution(Distribution):
        """Holds extension modules (a platform wheel) whenever the hot path is compiled."""

        def has_ext_modules(self) -> bool:
            return compiled

    if not compiled:
        print(f"hot path: not compiled ({compile_problem()}); the wheel is pure Python")
    setup(distclass=GossamerDistribution, cmdclass={"build_ext": CompileHotPath})
