"""Deltas: a proxy that applies whole-then-delta updates runs exactly what translation computes."""

from __future__ import annotations

import msgspec
import pytest

from gossamer.control.mesh.views import (
    Own,
    ViewState,
    compute_view,
    encode_update,
    patch_endpoints,
    sidecar_part,
    view_key,
)
from gossamer.resources import Resource, load_text
from gossamer.snapshot import Endpoint, Snapshot, SnapshotError
from gossamer.snapshot.protocol import (
    StaleBaseError,
    Update,
    apply_update,
    decode_from_control_plane,
)
from gossamer.snapshot.translate import EndpointIndex, SidecarSpec, sidecar_snapshot

BASE = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: productpage}
spec:
  selector: {matchLabels: {app: productpage}}
  template:
    metadata: {labels: {app: productpage}}
    spec: {containers: [{name: app, command: [python, -m, productpage], ports: [{containerPort: 9080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: productpage}
spec: {selector: {app: productpage}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}
"""

ROUTE = """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - timeout: 2s
    route: [{destination: {host: ratings}}]
"""

SPEC = SidecarSpec(workload="productpage", namespace="default", service_account="default")
LABELS = {"app": "productpage"}
REVIEWS = ("reviews.default.svc.cluster.local", 9080)


def resources(text: str) -> list[Resource]:
    loaded = load_text(text, "mesh.yaml")
    assert not loaded.problems, loaded.problems
    return [item.resource for item in loaded.resources]


def state(
    found: list[Resource], endpoints: EndpointIndex, generation: int, previous: ViewState | None
) -> tuple[ViewState, Own]:
    key = view_key("default", LABELS, frozenset())
    return compute_view(found, endpoints, key, generation, previous), sidecar_part(
        found, SPEC, LABELS
    )


def update(data: bytes | None) -> Update:
    assert data is not None
    message = decode_from_control_plane(data)
    assert isinstance(message, Update)
    return message


def same(running: Snapshot, expected: Snapshot) -> None:
    """Equal up to virtual-host order, which routing does not depend on."""

    def normal(snapshot: Snapshot) -> Snapshot:
        tables = tuple(
            msgspec.structs.replace(
                t, virtual_hosts=tuple(sorted(t.virtual_hosts, key=lambda h: h.name))
            )
            for t in sorted(snapshot.route_tables, key=lambda t: t.name)
        )
        return msgspec.structs.replace(snapshot, route_tables=tables)

    assert normal(running) == normal(expected)


def test_whole_then_deltas_run_what_translation_computes() -> None:
    before = resources(BASE)
    endpoints: EndpointIndex = {REVIEWS: [Endpoint("127.0.0.1", 9001)]}
    first, own = state(before, endpoints, 1, None)
    running = apply_update(None, update(encode_update("1", "", first.whole(), None, own)))
    same(running, sidecar_snapshot(before, endpoints, SPEC, "1"))

    # A VirtualService arrives and reviews gains an endpoint: one delta carries both.
    after = resources(BASE + ROUTE)
    more: EndpointIndex = {REVIEWS: [Endpoint("127.0.0.1", 9001), Endpoint("127.0.0.1", 9002)]}
    second, own2 = state(after, more, 2, first)
    data = encode_update("2", "1", second.delta(), own, own2)
    delta = update(data)
    assert delta.base == "1"
    assert {host.name for table in delta.tables for host in table.upsert} == {
        "reviews.default.svc.cluster.local:9080"
    }
    assert len(data or b"") < len(encode_update("2", "", second.whole(), None, own2) or b"") / 2
    running = apply_update(running, delta)
    same(running, sidecar_snapshot(after, more, SPEC, "2"))

    # The VirtualService goes again: back to the default route.
    third, own3 = state(before, more, 3, second)
    running = apply_update(running, update(encode_update("3", "2", third.delta(), own2, own3)))
    same(running, sidecar_snapshot(before, more, SPEC, "3"))


def test_nothing_changed_sends_nothing() -> None:
    found = resources(BASE)
    first, own = state(found, {}, 1, None)
    again, own2 = state(found, {}, 2, first)
    assert again.same_as(first)
    assert encode_update("2", "1", again.delta(), own, own2) is None


def test_a_delta_on_a_version_the_proxy_does_not_run_asks_for_the_whole() -> None:
    found = resources(BASE)
    first, own = state(found, {}, 1, None)
    running = apply_update(None, update(encode_update("1", "", first.whole(), None, own)))
    second, own2 = state(resources(BASE + ROUTE), {}, 2, first)
    stale = msgspec.structs.replace(
        update(encode_update("2", "1", second.delta(), own, own2)), base="0"
    )
    with pytest.raises(StaleBaseError, match="delta on 0"):
        apply_update(running, stale)


def test_a_proxy_some_steps_behind_gets_one_delta_not_the_whole() -> None:
    before = resources(BASE)
    first, own = state(before, {}, 1, None)
    running = apply_update(None, update(encode_update("1", "", first.whole(), None, own)))
    # Two steps pass while the proxy reads nothing: a route comes, reviews gains an endpoint,
    # then the route goes (reviews' host changed and changed back) and ratings gains one.
    after = resources(BASE + ROUTE)
    second, _ = state(after, {REVIEWS: [Endpoint("127.0.0.1", 9001)]}, 2, first)
    ratings = ("ratings.default.svc.cluster.local", 9080)
    latest: EndpointIndex = {
        REVIEWS: [Endpoint("127.0.0.1", 9001)],
        ratings: [Endpoint("127.0.0.1", 9003)],
    }
    third, own3 = state(before, latest, 3, second)
    fragment = third.delta_since(1)
    assert fragment is not None
    data = encode_update("3", "1", fragment, own, own3)
    assert len(data or b"") < len(encode_update("3", "", third.whole(), None, own3) or b"") / 2
    running = apply_update(running, update(data))
    same(running, sidecar_snapshot(before, latest, SPEC, "3"))
    # Too far back (or a generation this view never had): the whole, as before.
    assert third.delta_since(0) is None


def test_a_large_whole_goes_compressed_and_runs_what_translation_computes() -> None:
    many = "".join(
        f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}}}\n"
        f"spec: {{selector: {{app: svc-{i}}}, ports: [{{name: http, port: 80}}]}}\n"
        for i in range(150)
    )
    found = resources(BASE + many)
    endpoints: EndpointIndex = {REVIEWS: [Endpoint("127.0.0.1", 9001)]}
    first, own = state(found, endpoints, 1, None)
    whole = first.whole()
    assert whole.shared and not whole.hosts and not whole.clusters
    data = encode_update("1", "", whole, None, own)
    assert data is not None
    plain = sum(
        len(msgspec.json.encode(list(part.values()))) for part in (first.hosts, first.clusters)
    )
    assert len(data) < plain / 4
    running = apply_update(None, update(data))
    same(running, sidecar_snapshot(found, endpoints, SPEC, "1"))
    # A delta on top of it, as usual.
    more: EndpointIndex = {REVIEWS: [Endpoint("127.0.0.1", 9001), Endpoint("127.0.0.1", 9002)]}
    second, own2 = state(found, more, 2, first)
    running = apply_update(running, update(encode_update("2", "1", second.delta(), own, own2)))
    same(running, sidecar_snapshot(found, more, SPEC, "2"))


def test_a_shared_part_that_is_not_what_it_claims_is_refused() -> None:
    found = resources(BASE)
    first, own = state(found, {}, 1, None)
    good = update(encode_update("1", "", first.whole(), None, own))
    broken = msgspec.structs.replace(good, shared=b"not zlib")
    with pytest.raises(SnapshotError, match="shared part unreadable"):
        apply_update(None, broken)


SUBSETS = """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def test_endpoints_alone_patch_the_view_into_what_a_recompute_gives() -> None:
    found = resources(BASE + ROUTE + SUBSETS)
    v1 = Endpoint("127.0.0.1", 9001, labels=(("app", "reviews"), ("version", "v1")))
    v2 = Endpoint("127.0.0.1", 9002, labels=(("app", "reviews"), ("version", "v2")))
    first, own = state(found, {REVIEWS: [v1]}, 1, None)
    running = apply_update(None, update(encode_update("1", "", first.whole(), None, own)))

    # A v2 replica registers and a ratings replica too: only their clusters are rebuilt.
    ratings = ("ratings.default.svc.cluster.local", 9080)
    later: EndpointIndex = {REVIEWS: [v1, v2], ratings: [Endpoint("127.0.0.1", 9003)]}
    hosts = frozenset({REVIEWS[0], ratings[0]})
    patched = patch_endpoints(first, later, hosts, 2)
    assert patched is not None
    recomputed, _ = state(found, later, 2, first)
    assert patched.same_as(recomputed)
    assert (
        patched.steps[-1].clusters
        == recomputed.steps[-1].clusters
        == {
            "outbound|9080||reviews.default.svc.cluster.local",
            "outbound|9080|v2|reviews.default.svc.cluster.local",
            "outbound|9080||ratings.default.svc.cluster.local",
        }
    )
    running = apply_update(running, update(encode_update("2", "1", patched.delta(), own, own)))
    same(running, sidecar_snapshot(found, later, SPEC, "2"))

    # The v1 replica goes: its clusters lose it, the proxy runs what translation computes.
    last: EndpointIndex = {REVIEWS: [v2], ratings: later[ratings]}
    final = patch_endpoints(patched, last, frozenset({REVIEWS[0]}), 3)
    assert final is not None
    assert final.same_as(state(found, last, 3, patched)[0])
    running = apply_update(running, update(encode_update("3", "2", final.delta(), own, own)))
    same(running, sidecar_snapshot(found, last, SPEC, "3"))


def test_endpoints_alone_patch_the_clusters_of_opaque_tcp_ports_too() -> None:
    found = resources(
        BASE
        + """\
---
apiVersion: v1
kind: Service
metadata: {name: cache}
spec: {selector: {app: cache}, ports: [{name: tcp-redis, port: 6379}]}
"""
    )
    cache = ("cache.default.svc.cluster.local", 6379)
    first, _ = state(found, {}, 1, None)
    later: EndpointIndex = {cache: [Endpoint("127.0.0.1", 16379)]}
    patched = patch_endpoints(first, later, frozenset({cache[0]}), 2)
    assert patched is not None
    assert patched.same_as(state(found, later, 2, first)[0])
    assert patched.steps[-1].clusters == {"outbound|6379||cache.default.svc.cluster.local"}
