"""The proxy's hot path runs compiled where `make` could build it, and never from extensions
built from other sources than those on disk: an edited module runs as written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gossamer
from gossamer.proxy import compile as hotpath_build
from gossamer.proxy import native

PACKAGE = Path(gossamer.__file__).resolve().parent

# Which hot path a fresh interpreter picked, and how each of its modules was loaded.
PROBE = """
import importlib
import gossamer.proxy.native as native
print(native.MODE)
for name in native.MODULES:
    module = importlib.import_module(f"gossamer.proxy.{name}")
    print(name, type(module.__loader__).__name__, getattr(module, "EDITED", False))
"""


def probe(root: Path, **env: str) -> tuple[str, dict[str, tuple[str, bool]]]:
    environment = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    environment |= {"PYTHONPATH": str(root), **env}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        check=False,
        capture_output=True,
        text=True,
        env=environment,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    mode, *lines = done.stdout.splitlines()
    loaded = {}
    for line in lines:
        name, loader, edited = line.split()
        loaded[name] = (loader, edited == "True")
    return mode, loaded


@pytest.fixture(scope="module")
def compiled_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the package whose hot path is compiled from its sources (as `make` left the
    checkout, or built here when the checkout's build is missing or stale)."""
    root = tmp_path_factory.mktemp("compiled")
    shutil.copytree(PACKAGE, root / "gossamer", ignore=shutil.ignore_patterns("__pycache__"))
    proxy = root / "gossamer" / "proxy"
    if native.state(proxy) != "compiled":
        problem = hotpath_build.compiler_problem()
        assert problem is None, f"cannot compile the hot path: {problem}"
        hotpath_build.build(proxy)
    assert native.state(proxy) == "compiled"
    return root


@pytest.fixture
def tree(compiled_tree: Path, tmp_path: Path) -> Path:
    """A copy of `compiled_tree` that a test may edit."""
    shutil.copytree(compiled_tree / "gossamer", tmp_path / "gossamer")
    return tmp_path


def test_make_built_the_hot_path_the_suite_runs() -> None:
    problem = hotpath_build.compiler_problem()
    if os.environ.get(native.PURE_ENV):  # the suite was asked to run the sources
        assert native.MODE == "pure"
    elif problem is None:
        assert native.MODE == "compiled", "the compiled hot path is missing or stale: run `make`"
    else:  # `make` said why it could not compile; the proxy runs its sources
        assert native.MODE == "pure", problem


def test_current_extensions_run(tree: Path) -> None:
    mode, loaded = probe(tree)
    assert mode == "compiled"
    assert {name: loader for name, (loader, _) in loaded.items()} == dict.fromkeys(
        native.MODULES, "ExtensionFileLoader"
    )


def test_an_edited_module_runs_as_written_and_takes_the_others_with_it(tree: Path) -> None:
    router = tree / "gossamer" / "proxy" / "router.py"
    router.write_text(router.read_text() + "\nEDITED = True\n")
    assert native.state(tree / "gossamer" / "proxy") == "stale"
    mode, loaded = probe(tree)
    assert mode == "stale"
    # Compiled modules call each other directly, so none of them may run beside an edited one.
    assert {name: loader for name, (loader, _) in loaded.items()} == dict.fromkeys(
        native.MODULES, "SourceFileLoader"
    )
    assert loaded["router"] == ("SourceFileLoader", True)


def test_extensions_without_a_record_of_their_sources_do_not_run(tree: Path) -> None:
    (tree / "gossamer" / "proxy" / native.DIGEST_FILE).unlink()
    mode, loaded = probe(tree)
    assert mode == "stale"
    assert {loader for loader, _ in loaded.values()} == {"SourceFileLoader"}


def test_pure_python_on_request(tree: Path) -> None:
    mode, loaded = probe(tree, **{native.PURE_ENV: "1"})
    assert mode == "pure"
    assert {loader for loader, _ in loaded.values()} == {"SourceFileLoader"}


def test_clean_removes_the_extensions_and_the_sources_run(tree: Path) -> None:
    proxy = tree / "gossamer" / "proxy"
    removed = hotpath_build.clean(proxy)
    assert {file.name.split(".")[0] for file in removed} == {*native.MODULES, "hotpath__mypyc"}
    assert native.extension_files(proxy) == []
    assert not (proxy / native.DIGEST_FILE).exists()
    mode, loaded = probe(tree)
    assert mode == "pure"
    assert {loader for loader, _ in loaded.values()} == {"SourceFileLoader"}
