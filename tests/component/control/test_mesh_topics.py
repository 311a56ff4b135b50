"""The event broker as a mesh service: topics governed by sidecar mTLS and AuthorizationPolicy.

One identity and one policy language for HTTP routes and topics: the `users` service may publish
to the `users` topic, the `dashboard` may consume it as its own group and query it, and neither
may do the other's part. Requests travel caller sidecar -> mTLS -> broker sidecar -> broker.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gossamer.control.server import ControlPlane
from gossamer.events.client import EventsClient
from gossamer.events.server import BrokerServer, Listen
from gossamer.events.service import BrokerService, ServiceConfig
from gossamer.events.wire import BrokerError
from gossamer.resources import load_text

from .test_mesh_push import APPS, CORE, create, deployment, eventually_async, sidecar
from .test_mesh_security import SECURITY

POLICY = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: users-topic}
spec:
  selector: {matchLabels: {app: event-broker}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/users"]}}]
    to: [{operation: {methods: ["POST"], paths: ["/topics/users/publish"]}}]
  - from: [{source: {principals: ["cluster.local/ns/default/sa/dashboard"]}}]
    to: [{operation: {paths: ["/topics/users/groups/dashboard/*", "/topics/users/query"]}}]
"""


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[BrokerServer]:
    server = BrokerServer(
        BrokerService(ServiceConfig(tmp_path / "broker")), Listen("127.0.0.1", 0), graceful_s=1.0
    )
    async with server:
        async with EventsClient(server.url) as admin:
            await admin.declare("users", {})
        yield server


@contextlib.asynccontextmanager
async def events_through(outbound: int) -> AsyncIterator[EventsClient]:
    """An events client that calls the broker through a sidecar's outbound port."""
    http = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{outbound}",
        headers={"Host": "event-broker:8080"},
        timeout=10.0,
    )
    async with EventsClient(f"http://127.0.0.1:{outbound}", http=http) as client:
        yield client


async def test_topic_policies_are_enforced_by_the_brokers_sidecar(
    plane: ControlPlane, client: httpx.AsyncClient, token: str, broker: BrokerServer
) -> None:
    await create(client, APPS, deployment("event-broker", "event-broker", app="event-broker"))
    await create(client, APPS, deployment("users", "users", app="users"))
    await create(client, APPS, deployment("dashboard", "dashboard", app="dashboard"))
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "event-broker"},
        "spec": {"selector": {"app": "event-broker"}, "ports": [{"name": "http", "port": 8080}]},
    }
    await create(client, f"{CORE}/services", service)
    [policy] = [loaded.resource for loaded in load_text(POLICY, "policy.yaml").resources]
    body = policy.model_dump(by_alias=True, exclude_none=True, mode="json")
    await create(client, f"{SECURITY}/authorizationpolicies", body)
    broker_port = int(broker.url.rsplit(":", 1)[1])
    async with (
        sidecar(plane.url, token, "event-broker", app_port=broker_port),
        sidecar(plane.url, token, "users") as users,
        sidecar(plane.url, token, "dashboard") as dashboard,
    ):
        async with events_through(users.outbound) as publisher:

            async def published() -> bool:
                try:
                    await publisher.publish("users", {"userId": "u1"})
                except BrokerError:
                    return False
                return True

            await eventually_async(published)
        async with events_through(dashboard.outbound) as reader:
            # The dashboard may query the topic and consume it as its own group...
            rows = await reader.query("SELECT count(*) AS n FROM users", topic="users")
            assert rows["rows"] == [[1]] or rows["rows"] == [{"n": 1}], rows
            async with reader.subscribe("users", "dashboard", from_beginning=True) as stream:
                event = await anext(stream)
                assert event.payload == {"userId": "u1"}
                await stream.ack(event)
            # ...but not publish to it.
            with pytest.raises(BrokerError) as refused:
                await reader.publish("users", {"userId": "forged"})
            assert refused.value.status == 403
            assert "rbac denied" in str(refused.value)
        async with events_through(users.outbound) as publisher:
            # And the users service may not read it as another group.
            with pytest.raises(BrokerError) as refused:
                async with publisher.subscribe("users", "billing", from_beginning=True) as stream:
                    await anext(stream)
            assert refused.value.status == 403
