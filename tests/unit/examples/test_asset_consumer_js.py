"""The Node asset-consumer's own unit tests (node:test, no packages), run as part of the suite."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "assets"
NODE = shutil.which("node")


def test_the_asset_consumer_unit_tests_pass() -> None:
    assert NODE is not None, "the asset-consumer needs node (make test installs Debian's nodejs)"
    result = subprocess.run(
        [NODE, "--test", "asset-consumer/test/"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
