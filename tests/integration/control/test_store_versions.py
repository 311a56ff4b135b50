"""The largest version the API accepts is one both stores can watch from.

The API takes versions up to 2^63 - 1 (`MAX_VERSION`); etcd watches from `version + 1`, which
it refused with 2^63 (and the API answered 503) until the store capped it.
"""

from __future__ import annotations

import asyncio

import pytest

from gossamer.control.api.admission import MAX_VERSION
from gossamer.control.store import ObjectKey, ResourceType, Scope, Store

SERVICES = ResourceType("", "services")


async def test_a_watch_from_the_largest_version_opens_and_sees_no_change(store: Store) -> None:
    async with await store.watch(Scope(SERVICES), MAX_VERSION) as watch:
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}
        await store.create(ObjectKey(SERVICES, "default", "web"), service)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                extra = await anext(watch)
                pytest.fail(f"unexpected event {extra}")
