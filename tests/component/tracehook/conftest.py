"""The trace hook installed in the test process for one test, and removed after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gossamer import tracehook

from .recorder import Recorder, running_recorder


@pytest.fixture
def hook() -> Iterator[tracehook.Installation]:
    installation = tracehook.install()
    yield installation
    installation.uninstall()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with running_recorder() as running:
        yield running
