"""The startup hook in a real interpreter: installed for `python -m`, chained to the
sitecustomize it hides, left out when switched off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gossamer import tracehook

PROBE = """
import sys, urllib.request, http.client
installed = any(type(f).__name__ == "PatchOnImport" for f in sys.meta_path)
wrapped = http.client.HTTPConnection.endheaders.__name__ == "traced_endheaders"
print(installed, wrapped, getattr(sys.modules.get("sitecustomize"), "CHAINED", None))
"""


def run_app(tmp_path: Path, *path: Path, **env: str) -> str:
    package = tmp_path / "app"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(PROBE)
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environ |= {"PYTHONPATH": os.pathsep.join(map(str, path)), **env}
    done = subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stderr == ""
    return done.stdout.strip()


def test_python_m_runs_with_the_hook_installed(tmp_path: Path) -> None:
    assert run_app(tmp_path, Path(tracehook.STARTUP_FOLDER)) == "True True None"


def test_the_sitecustomize_it_hides_still_runs(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "sitecustomize.py").write_text("CHAINED = 'yes'\n")
    assert run_app(tmp_path, Path(tracehook.STARTUP_FOLDER), theirs) == "True True yes"


def test_switched_off_nothing_is_installed(tmp_path: Path) -> None:
    folder = Path(tracehook.STARTUP_FOLDER)
    assert run_app(tmp_path, folder, GOSSAMER_TRACE_PROPAGATION="off") == "False False None"
