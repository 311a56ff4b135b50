"""Patching a module when it is imported, once, and undoing it; a failing patch is harmless."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gossamer import tracehook
from gossamer.tracehook.patching import Patcher, PatchOnImport


@pytest.fixture
def library(tmp_path: Path) -> Iterator[str]:
    """A module `traced_lib_*` on sys.path, not imported yet."""
    name = f"traced_lib_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        "class Greeter:\n    def greet(self):\n        return 'hello'\n"
    )
    sys.path.insert(0, str(tmp_path))
    yield name
    sys.path.remove(str(tmp_path))
    sys.modules.pop(name, None)


def shout(module: ModuleType, patcher: Patcher) -> None:
    def wrap(greet: Any) -> Any:
        return lambda greeter: greet(greeter).upper()

    patcher.wrap(module.Greeter, "greet", wrap)
    patcher.wrap(module.Greeter, "greet", wrap)  # a second wrap of the same name is ignored


def test_a_module_is_patched_when_imported_and_keeps_its_own_loader(library: str) -> None:
    patcher = Patcher()
    finder = PatchOnImport({library: shout}, patcher)
    sys.meta_path.insert(0, finder)
    try:
        module = __import__(library)
        assert module.Greeter().greet() == "HELLO"
        assert type(module.__loader__).__name__ == "SourceFileLoader"
        assert module.__spec__.loader is module.__loader__
    finally:
        sys.meta_path.remove(finder)
        patcher.undo()
    assert module.Greeter().greet() == "hello"


def test_a_module_imported_before_is_patched_at_once(library: str) -> None:
    module = __import__(library)
    patcher = Patcher()
    PatchOnImport({library: shout}, patcher).patch_loaded()
    assert module.Greeter().greet() == "HELLO"
    patcher.undo()
    assert module.Greeter().greet() == "hello"


def test_a_failing_patch_leaves_the_module_working(
    library: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(module: ModuleType, patcher: Patcher) -> None:
        patcher.wrap(module.Greeter, "no_such_method", lambda f: f)

    finder = PatchOnImport({library: broken}, Patcher())
    sys.meta_path.insert(0, finder)
    try:
        module = __import__(library)
    finally:
        sys.meta_path.remove(finder)
    assert module.Greeter().greet() == "hello"
    assert f"gossamer: trace propagation is off for {library}: KeyError" in capsys.readouterr().err


def test_install_wraps_the_standard_library_and_uninstall_restores_it() -> None:
    import http.client  # noqa: PLC0415
    import http.server  # noqa: PLC0415

    endheaders = http.client.HTTPConnection.endheaders
    parse_request = http.server.BaseHTTPRequestHandler.parse_request
    installation = tracehook.install()
    try:
        assert http.client.HTTPConnection.endheaders is not endheaders
        assert http.server.BaseHTTPRequestHandler.parse_request is not parse_request
    finally:
        installation.uninstall()
    assert http.client.HTTPConnection.endheaders is endheaders
    assert http.server.BaseHTTPRequestHandler.parse_request is parse_request
    assert installation.finder not in sys.meta_path


def test_propagation_is_on_unless_switched_off() -> None:
    assert tracehook.enabled({})
    assert tracehook.enabled({"GOSSAMER_TRACE_PROPAGATION": "on"})
    assert not tracehook.enabled({"GOSSAMER_TRACE_PROPAGATION": " OFF "})
