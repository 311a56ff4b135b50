"""WorkloadEntries as the endpoints of the Services and ServiceEntries whose selectors match them."""

from gossamer.resources import Resource, load_text
from gossamer.snapshot import Endpoint
from gossamer.snapshot.codec import check
from gossamer.snapshot.endpoints import endpoint_index
from gossamer.snapshot.translate import SidecarSpec, sidecar_snapshot

RATINGS = "ratings.prod.svc.cluster.local"

# http: no targetPort; grpc: a numeric one; metrics: a named one.
SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: prod}
spec:
  selector: {app: ratings}
  ports:
  - {name: http, port: 9080}
  - {name: grpc, port: 9090, targetPort: 19090}
  - {name: metrics, port: 9901, targetPort: prom}
"""


def workload(
    name: str,
    address: str,
    *,
    namespace: str = "prod",
    labels: str = "{app: ratings}",
    extra: str = "",
    metadata: str = "",
    status: str = "",
) -> str:
    """A WorkloadEntry document; `extra` adds spec lines, `metadata` and `status` whole blocks."""
    return f"""\
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: {name}
  namespace: {namespace}
{metadata}spec:
  address: {address}
  labels: {labels}
{extra}{status}"""


def resources(text: str) -> list[Resource]:
    result = load_text(text, "test.yaml")
    assert [str(p) for p in result.problems if p.severity.name == "ERROR"] == []
    return [loaded.resource for loaded in result.resources]


def index_of(text: str) -> dict[tuple[str, int], list[tuple[str, int]]]:
    """The index as (address, port) pairs, which most tests are about."""
    index = endpoint_index(resources(text))
    return {key: [(e.address, e.port) for e in found] for key, found in index.items()}


def test_an_entry_the_selector_matches_is_an_endpoint_of_each_port_it_takes() -> None:
    index = endpoint_index(resources(SERVICE + workload("vm-1", "10.0.0.1")))
    labels = (("app", "ratings"),)
    # With no ports of its own, the entry takes each port on the service's target port; it
    # declares no `prom`, so it is no endpoint of metrics, as a pod without that port would not be.
    assert index == {
        (RATINGS, 9080): (Endpoint("10.0.0.1", 9080, labels=labels),),
        (RATINGS, 9090): (Endpoint("10.0.0.1", 19090, labels=labels),),
    }


def test_only_entries_of_the_service_namespace_with_every_selected_label_match() -> None:
    text = (
        SERVICE
        + workload("other-app", "10.0.0.2", labels="{app: reviews}")
        + workload("other-namespace", "10.0.0.3", namespace="default")
        + workload("more-labels", "10.0.0.4", labels="{app: ratings, version: v2}")
        + """\
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 80, targetPort: 8080}]
"""
    )
    assert index_of(text) == {
        (RATINGS, 9080): [("10.0.0.4", 9080)],
        (RATINGS, 9090): [("10.0.0.4", 19090)],
        ("ratings.default.svc.cluster.local", 80): [("10.0.0.3", 8080)],
    }


def test_a_service_without_a_selector_or_an_external_name_one_has_none() -> None:
    text = (
        SERVICE.replace("  selector: {app: ratings}\n", "")
        + workload("vm-1", "10.0.0.1")
        + """\
---
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: prod}
spec:
  type: ExternalName
  externalName: legacy.example.com
  selector: {app: ratings}
  ports: [{name: http, port: 80}]
"""
    )
    assert index_of(text) == {}


def test_the_entry_port_named_like_the_service_port_wins_and_names_resolve_target_ports() -> None:
    text = SERVICE + workload("vm-1", "10.0.0.1", extra="  ports: {http: 8080, prom: 15090}\n")
    assert index_of(text) == {
        (RATINGS, 9080): [("10.0.0.1", 8080)],
        (RATINGS, 9090): [("10.0.0.1", 19090)],
        (RATINGS, 9901): [("10.0.0.1", 15090)],
    }


def test_an_entry_behind_a_sidecar_takes_every_port_on_the_inbound_port() -> None:
    text = SERVICE + workload(
        "vm-1",
        "10.0.0.1",
        metadata='  annotations: {gossamer.dev/inbound-port: "15006"}\n',
        extra="  ports: {grpc: 7000}\n",
    )
    # A port the entry names itself still goes there; every other one goes to the sidecar.
    assert index_of(text) == {
        (RATINGS, 9080): [("10.0.0.1", 15006)],
        (RATINGS, 9090): [("10.0.0.1", 7000)],
        (RATINGS, 9901): [("10.0.0.1", 15006)],
    }


def healthy(status: str) -> str:
    return f'status:\n  conditions:\n  - {{type: Healthy, status: "{status}"}}\n'


def test_an_entry_that_health_checks_report_unhealthy_is_left_out() -> None:
    text = (
        SERVICE
        + workload("failing", "10.0.0.1", status=healthy("False"))
        + workload("not-probed-yet", "10.0.0.2", status=healthy("Unknown"))
        + workload("passing", "10.0.0.3", status=healthy("True"))
        + workload("static", "10.0.0.4")
        + workload(
            "reconciled",
            "10.0.0.5",
            status='status:\n  conditions: [{type: Reconciled, status: "False"}]\n',
        )
    )
    assert [address for address, _ in index_of(text)[(RATINGS, 9080)]] == [
        "10.0.0.3",
        "10.0.0.4",
        "10.0.0.5",
    ]


def test_weight_locality_and_sorted_labels_are_kept() -> None:
    text = (
        SERVICE
        + workload(
            "heavy",
            "10.0.0.1",
            labels="{version: v1, app: ratings}",
            extra="  weight: 3\n  locality: us-east1/us-east1-b\n",
        )
        + workload("unset", "10.0.0.2", extra="  weight: 0\n")
    )
    assert endpoint_index(resources(text))[(RATINGS, 9080)] == (
        Endpoint(
            "10.0.0.1",
            9080,
            weight=3,
            zone="us-east1/us-east1-b",
            labels=(("app", "ratings"), ("version", "v1")),
        ),
        # Istio reads a weight of 0 as not given.
        Endpoint("10.0.0.2", 9080, weight=1, labels=(("app", "ratings"),)),
    )


def test_host_names_are_kept_and_sockets_and_remote_networks_left_out() -> None:
    text = (
        SERVICE
        + workload("by-name", "vm1.corp.example.com")
        + workload("socket", "unix:///run/ratings.sock")
        + workload("remote", '""', extra="  network: cluster-2\n")
    )
    assert index_of(text)[(RATINGS, 9080)] == [("vm1.corp.example.com", 9080)]


def test_the_index_is_the_same_whatever_the_order_of_the_resources() -> None:
    entries = [workload(f"vm-{n}", f"10.0.0.{n}") for n in (3, 1, 2)]
    forward = endpoint_index(resources(SERVICE + "".join(entries)))
    backward = endpoint_index(resources("".join(reversed(entries)) + "---\n" + SERVICE))
    assert forward == backward
    assert list(forward) == [(RATINGS, 9080), (RATINGS, 9090)]
    assert [e.address for e in forward[(RATINGS, 9080)]] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


def test_a_service_entry_workload_selector_selects_entries_as_istio_documents() -> None:
    text = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: details-svc, namespace: prod}
spec:
  hosts: [details.bookinfo.com]
  location: MESH_INTERNAL
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  resolution: STATIC
  workloadSelector: {labels: {app: details}}
""" + "".join(workload(f"details-vm-{n}", f"2.2.2.{n}", labels="{app: details}") for n in (1, 2))
    assert index_of(text) == {("details.bookinfo.com", 80): [("2.2.2.1", 8080), ("2.2.2.2", 8080)]}


def test_a_sidecar_snapshot_routes_to_the_entries_of_a_service() -> None:
    text = (
        SERVICE
        + workload("vm-1", "10.0.0.1", labels="{app: ratings, version: v1}")
        + workload(
            "vm-2",
            "10.0.0.2",
            labels="{app: ratings, version: v2}",
            extra="  ports: {http: 8080}\n  weight: 2\n",
        )
        + workload(
            "vm-3", "10.0.0.3", labels="{app: ratings, version: v2}", status=healthy("False")
        )
        + """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: prod}
spec:
  host: ratings.prod.svc.cluster.local
  subsets: [{name: v2, labels: {version: v2}}]
"""
    )
    loaded = resources(text)
    caller = SidecarSpec("productpage-v1", "default", "bookinfo-productpage")
    snapshot = sidecar_snapshot(loaded, endpoint_index(loaded), caller, "1")
    check(snapshot)
    clusters = {cluster.name: cluster for cluster in snapshot.clusters}
    v1 = (("app", "ratings"), ("version", "v1"))
    v2 = (("app", "ratings"), ("version", "v2"))
    assert clusters[f"outbound|9080||{RATINGS}"].endpoints == (
        Endpoint("10.0.0.1", 9080, labels=v1),
        Endpoint("10.0.0.2", 8080, weight=2, labels=v2),
    )
    assert clusters[f"outbound|9080|v2|{RATINGS}"].endpoints == (
        Endpoint("10.0.0.2", 8080, weight=2, labels=v2),
    )
