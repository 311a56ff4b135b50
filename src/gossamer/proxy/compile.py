"""Compile the proxy's hot path with mypyc (`python -m gossamer.proxy.compile`; `make` runs it).

See `gossamer.proxy.native` for what is compiled and how the proxy picks compiled or pure code.
The build writes each file beside its final name and renames it into place, so that a running
proxy, which has the previous extension mapped into memory, never reads a half-written file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path

from gossamer.proxy.native import (
    DIGEST_FILE,
    GROUP,
    MODULES,
    PACKAGE,
    PACKAGE_DIR,
    describe,
    extension_files,
    source_digest,
    state,
)


class BuildError(Exception):
    """The hot path could not be compiled; the message says why and what to do."""


def compiler_problem() -> str | None:
    """Why no extension can be built here, or None when a C compiler and Python's headers exist."""
    # The CC variable overrides Python's own compiler in setuptools' builds, so here too.
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler}) on PATH"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.exists():
        return f"Python's C headers are missing ({headers})"
    try:
        import mypyc  # noqa: F401, PLC0415 - only a build needs it
        import setuptools  # noqa: F401, PLC0415
    except ImportError as error:
        return f"{error.name} is not installed (pip install mypy setuptools)"
    return None


def build(directory: Path = PACKAGE_DIR) -> Path:
    """Compile the hot path in `directory`; return the digest file written last."""
    problem = compiler_problem()
    if problem is not None:
        raise BuildError(problem)
    from mypyc.build import mypycify  # noqa: PLC0415
    from setuptools import Distribution  # noqa: PLC0415

    digest = source_digest(directory)
    root = directory.parent.parent  # holds the `gossamer` package
    relative = directory.relative_to(root)
    with tempfile.TemporaryDirectory(prefix="gossamer-hotpath-") as scratch:
        work = Path(scratch)
        with contextlib.chdir(root):
            extensions = mypycify(
                [
                    f"--cache-dir={work / 'mypy'}",
                    *(str(relative / f"{name}.py") for name in MODULES),
                ],
                opt_level="3",
                group_name=GROUP,
                target_dir=str(work / "c"),
            )
            distribution = Distribution({"name": "gossamer-hotpath", "ext_modules": extensions})
            command = distribution.get_command_obj("build_ext")
            command.build_lib = str(work / "lib")
            command.build_temp = str(work / "obj")
            distribution.run_command("build_ext")
        built = sorted((work / "lib" / relative).iterdir())
        if not built:
            raise BuildError(f"mypyc built nothing in {work / 'lib' / relative}")
        for stale in extension_files(directory):
            stale.unlink()
        for file in built:
            _replace(file, directory / file.name)
    record = directory / DIGEST_FILE
    _write(record, digest + "\n")
    return record


def clean(directory: Path = PACKAGE_DIR) -> list[Path]:
    """Remove the extensions and their digest; the sources run from then on."""
    removed = extension_files(directory)
    for file in removed:
        file.unlink()
    (directory / DIGEST_FILE).unlink(missing_ok=True)
    return removed


def _replace(source: Path, target: Path) -> None:
    # A copy beside the target, then a rename: a process that has the old file mapped keeps it.
    partial = target.with_name(f".{target.name}.partial")
    shutil.copyfile(source, partial)
    partial.chmod(0o755)
    partial.replace(target)


def _write(target: Path, text: str) -> None:
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(text)
    partial.replace(target)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m gossamer.proxy.compile [build|clean|status]`."""
    parser = argparse.ArgumentParser(
        prog="python -m gossamer.proxy.compile",
        description="Compile the proxy's hot path with mypyc, remove it, or say which runs.",
    )
    parser.add_argument("action", choices=["build", "clean", "status"], nargs="?", default="status")
    parser.add_argument(
        "--if-possible",
        action="store_true",
        help="without a C compiler, say so and succeed (the proxy then runs as pure Python)",
    )
    args = parser.parse_args(argv)
    if args.action == "status":
        print(f"{PACKAGE_DIR}: {state()}; this process runs {describe()}")
        return 0
    if args.action == "clean":
        for file in clean():
            print(f"removed {file}")
        return 0
    problem = compiler_problem()
    if problem is not None:
        message = f"cannot compile the proxy's hot path: {problem}"
        if args.if_possible:
            print(f"{message}; the proxy runs as pure Python (slower)", file=sys.stderr)
            return 0
        print(f"error: {message}", file=sys.stderr)
        return 1
    try:
        record = build()
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"compiled {len(MODULES)} modules of {PACKAGE} ({record})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
