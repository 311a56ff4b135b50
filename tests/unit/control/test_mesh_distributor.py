"""Recompute pacing: while proxies join by the thousand, the updates a recompute woke are sent
before the next recompute starts, so each proxy gets few updates and joins get the loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gossamer.control.mesh.distributor import ENTRIES, Distributor
from gossamer.control.store import ObjectKey, ResourceType
from gossamer.resources import Resource, load_text
from gossamer.snapshot.protocol import Hello

MESH = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews}
spec:
  selector: {matchLabels: {app: reviews}}
  template:
    metadata: {labels: {app: reviews}}
    spec: {containers: [{name: app, command: [python, -m, reviews]}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
"""


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        await asyncio.sleep(0.01)


def entry(index: int) -> Resource:
    text = f"""\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-{index}}}
spec: {{address: 127.0.0.{index + 1}, labels: {{app: reviews}}}}
"""
    loaded = load_text(text, "entry.yaml")
    assert not loaded.problems, loaded.problems
    return loaded.resources[0].resource


class Mirror:
    """The store's objects as a dict, and who follows their changes (StoreMirror's interface)."""

    def __init__(self, text: str) -> None:
        self.resources: dict[ObjectKey, Resource] = {}
        self.listeners: list[Callable[[frozenset[ObjectKey]], None]] = []
        for loaded in load_text(text, "mesh.yaml").resources:
            resource = loaded.resource
            plural = {"Deployment": "deployments", "Service": "services"}[resource.kind]
            group = "apps" if resource.kind == "Deployment" else ""
            key = ObjectKey(ResourceType(group, plural), resource.namespace, resource.name)
            self.resources[key] = resource

    def subscribe(self, listener: Callable[[frozenset[ObjectKey]], None]) -> None:
        self.listeners.append(listener)

    def register(self, resource: Resource) -> None:
        key = ObjectKey(ENTRIES, resource.namespace, resource.name)
        self.resources[key] = resource
        for listener in self.listeners:
            listener(frozenset({key}))


async def test_a_recompute_waits_until_the_proxies_the_last_one_woke_have_their_update() -> None:
    mirror = Mirror(MESH)
    distributor = Distributor(mirror, "replica", debounce_s=0.0, max_delay_s=0.0)  # type: ignore[arg-type]
    distributor.start()
    streams = [distributor.connect(Hello(workload=f"caller-{i}")) for i in range(3)]
    for stream in streams:
        assert distributor.compose(stream) is not None  # each one's first update, whole
        stream.wake.clear()

    mirror.register(entry(1))
    await eventually(lambda: distributor.recomputes == 1)
    assert all(stream.wake.is_set() for stream in streams)

    # Another registration while the first one's updates are still unsent: no recompute yet,
    # however long the proxies take (here, until the test sends them).
    mirror.register(entry(2))
    for stream in streams[:2]:
        stream.wake.clear()
        assert distributor.compose(stream) is not None
    await asyncio.sleep(0.3)  # many times the debounce (0) and the quiet period (ms)
    assert distributor.recomputes == 1

    # The last one is sent its update: the second registration is recomputed, and every proxy
    # is woken for it.
    streams[2].wake.clear()
    assert distributor.compose(streams[2]) is not None
    await eventually(lambda: distributor.recomputes == 2)
    assert all(stream.wake.is_set() for stream in streams)


async def test_a_proxy_that_leaves_before_its_update_does_not_hold_recomputes_back() -> None:
    mirror = Mirror(MESH)
    distributor = Distributor(mirror, "replica", debounce_s=0.0, max_delay_s=0.0)  # type: ignore[arg-type]
    distributor.start()
    stream = distributor.connect(Hello(workload="caller"))
    assert distributor.compose(stream) is not None
    mirror.register(entry(1))
    await eventually(lambda: distributor.recomputes == 1)

    distributor.disconnect(stream)
    mirror.register(entry(2))
    await eventually(lambda: distributor.recomputes == 2)
