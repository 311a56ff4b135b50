"""A WorkloadEntry a Service selects is one of its endpoints, so analysis does not call it empty."""

from gossamer.resources import load_text
from gossamer.resources.analysis import analyze

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: prod}
spec:
  selector: {app: ratings}
  ports:
  - {name: http, port: 9080, targetPort: web}
"""

ENTRY = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-vm, namespace: prod}
spec:
  address: 10.0.0.7
  ports: {web: 8080}
  labels: {app: ratings, version: v3}
"""

RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: prod}
spec:
  host: ratings
  subsets:
  - name: v3
    labels: {version: v3}
"""


def problems(*documents: str) -> list[str]:
    loaded = load_text("---\n".join(documents), "m.yaml")
    assert [str(p) for p in loaded.problems] == []
    return [str(problem) for problem in analyze(loaded.resources)]


def test_a_service_that_selects_only_a_workload_entry_has_endpoints() -> None:
    assert problems(SERVICE, ENTRY) == []


def test_an_entry_of_another_namespace_or_with_other_labels_is_not_selected() -> None:
    warning = (
        "m.yaml:5: warning: Service ratings: spec.selector: matches no Deployment or "
        "WorkloadEntry in namespace prod, so the Service has no endpoints"
    )
    assert problems(SERVICE, ENTRY.replace("namespace: prod", "namespace: dev")) == [warning]
    assert problems(SERVICE, ENTRY.replace("app: ratings,", "app: reviews,")) == [warning]


def test_a_named_target_port_is_found_among_the_entry_ports() -> None:
    # As endpoints.py finds the port: the service port's name, the target's, or a sidecar's.
    assert problems(SERVICE, ENTRY.replace("web: 8080", "http: 8080")) == []
    sidecar = ENTRY.replace(
        "namespace: prod}", 'namespace: prod, annotations: {gossamer.dev/inbound-port: "15006"}}'
    )
    assert problems(SERVICE, sidecar.replace("ports: {web: 8080}", "ports: {}")) == []
    assert problems(SERVICE, ENTRY.replace("web: 8080", "admin: 8080")) == [
        "m.yaml:7: warning: Service ratings: spec.ports[0].targetPort: no selected WorkloadEntry "
        "names a port web"
    ]


def test_a_subset_may_select_workload_entries() -> None:
    assert problems(SERVICE, ENTRY, RULE) == []
    assert problems(SERVICE, ENTRY, RULE.replace("version: v3", "version: v4")) == [
        "m.yaml:24: warning: DestinationRule ratings: spec.subsets[0].labels: no replica or "
        "WorkloadEntry of Service ratings carries these labels, so subset v3 has no endpoints"
    ]
