"""The mesh DNS runs on asyncio's own loop (`gossamer dns` uses `asyncio.run`): so do its tests,
rather than the uvloop the proxies' component tests use."""

import asyncio
from collections.abc import Mapping

import pytest
from pytest_asyncio.plugin import LoopFactory


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, LoopFactory]:
    return {"asyncio": asyncio.new_event_loop}
