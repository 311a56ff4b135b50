"""A control plane in-process on a free port, and HTTP clients with and without its token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gossamer.control.api.resources import ApiSettings
from gossamer.control.server import ControlPlane, ControlPlaneConfig, Listen
from gossamer.control.store import StoreSettings

# History short enough that a test can outrun it; bodies small enough to test the limit.
SETTINGS = StoreSettings(history=20, compact_every=1)
API = ApiSettings(max_body_bytes=64 * 1024)


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    config = ControlPlaneConfig(
        state_dir=tmp_path / "state",
        listen=Listen("127.0.0.1", 0),
        api=API,
        store_settings=SETTINGS,
        graceful_s=1.0,
        tls=False,  # what the API does; tests/component/control/test_api_tls.py is about TLS
    )
    async with ControlPlane(config) as running:
        yield running


@pytest.fixture
def token(plane: ControlPlane) -> str:
    return plane.token_file.read_text().strip()


@pytest.fixture
async def client(plane: ControlPlane, token: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=plane.url, headers=headers, timeout=10.0) as http:
        yield http


@pytest.fixture
async def anonymous(plane: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=plane.url, timeout=10.0) as http:
        yield http
