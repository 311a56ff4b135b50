"""Topics are governed by HTTP AuthorizationPolicy paths: every request names its topic first.

This checks the layout those policies rely on: the requests the client really sends, matched
with Istio's path rules (exact, `prefix*`). tests/component/control/test_mesh_topics.py runs
the same policy in the brokers' sidecar, over mTLS, through a real control plane.
"""

import httpx

from gossamer.events.client import EventsClient
from gossamer.events.server import BrokerServer
from gossamer.resources import load_text
from gossamer.resources.kinds.istio_security import AuthorizationPolicy

from .harness import eventually

POLICY = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: users-topic, namespace: greencompute}
spec:
  selector: {matchLabels: {app: event-broker}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/greencompute/sa/users"]}}]
    to: [{operation: {methods: ["POST"], paths: ["/topics/users/publish"]}}]
  - from: [{source: {principals: ["cluster.local/ns/greencompute/sa/dashboard"]}}]
    to: [{operation: {paths: ["/topics/users/groups/dashboard/*", "/topics/users/query"]}}]
"""


def allowed(paths: list[str], path: str) -> bool:
    """Istio's HTTP path match: exact, or a prefix ending in `*`."""
    return any(path.startswith(p[:-1]) if p.endswith("*") else path == p for p in paths)


def policy_paths() -> dict[str, list[str]]:
    loaded = load_text(POLICY, "policy.yaml")
    assert not loaded.problems
    policy = loaded.resources[0].resource
    assert isinstance(policy, AuthorizationPolicy)
    by_principal: dict[str, list[str]] = {}
    for rule in policy.spec.rules:
        principal = rule.from_[0].source.principals[0]  # type: ignore[index, union-attr]
        by_principal[principal.rsplit("/", 1)[1]] = rule.to[0].operation.paths  # type: ignore[index, union-attr]
    return by_principal


async def recorded(url: str, work: object) -> list[tuple[str, str]]:
    """(method, path) of every request the client sends while doing `work(client, seen)`."""
    seen: list[tuple[str, str]] = []

    async def record(request: httpx.Request) -> None:
        seen.append((request.method, request.url.path))

    http = httpx.AsyncClient(base_url=url, event_hooks={"request": [record]})
    async with EventsClient(url, http=http) as client:
        await work(client, seen)  # type: ignore[operator]
    return seen


async def test_publishing_to_users_is_one_path_the_policy_can_name(broker: BrokerServer) -> None:
    async with EventsClient(broker.url) as admin:
        await admin.declare("users", {})
        await admin.declare("users-dead-letter", {})

    async def publish(client: EventsClient, _: object) -> None:
        await client.publish("users", {"userId": "u1"})

    async def publish_elsewhere(client: EventsClient, _: object) -> None:
        await client.publish("users-dead-letter", {"userId": "u1"})

    paths = policy_paths()
    assert await recorded(broker.url, publish) == [("POST", "/topics/users/publish")]
    assert all(allowed(paths["users"], p) for _, p in await recorded(broker.url, publish))
    # A name that starts like another topic's is a different path segment, not a prefix.
    elsewhere = await recorded(broker.url, publish_elsewhere)
    assert not any(allowed(paths["users"], p) for _, p in elsewhere)


async def test_consuming_as_a_group_stays_under_that_group(broker: BrokerServer) -> None:
    async with EventsClient(broker.url) as admin:
        await admin.declare("users", {})
        await admin.publish("users", {"userId": "u1"})

    async def consume(client: EventsClient, seen: list[tuple[str, str]]) -> None:
        async with client.subscribe(
            "users", "dashboard", from_beginning=True, heartbeat_s=0.05
        ) as sub:
            event = await anext(sub)
            await sub.ack(event)

            async def heartbeat_sent() -> bool:
                return ("POST", "/topics/users/groups/dashboard/heartbeat") in seen

            await eventually(heartbeat_sent, what="a heartbeat")
        await client.seek("users", "dashboard", to="beginning")
        await client.query("SELECT count(*) FROM users", topic="users")

    requests = await recorded(broker.url, consume)
    paths = policy_paths()
    assert {p for _, p in requests} >= {
        "/topics/users/groups/dashboard/subscribe",
        "/topics/users/groups/dashboard/ack",
        "/topics/users/groups/dashboard/heartbeat",
        "/topics/users/groups/dashboard/seek",
        "/topics/users/query",
    }
    assert all(allowed(paths["dashboard"], p) for _, p in requests)
    assert not allowed(paths["dashboard"], "/topics/users/publish")
    assert not allowed(paths["dashboard"], "/topics/users/groups/billing/subscribe")
