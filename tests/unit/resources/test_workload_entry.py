"""WorkloadEntry: Istio's fields and rules, its status conditions, Gossamer's inbound-port annotation."""

import pytest

from gossamer.resources import load_text
from gossamer.resources.kinds.istio_networking import WorkloadEntry

ENTRY = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: ratings-vm
  namespace: prod
spec:
  address: 10.0.0.7
  ports:
    http: 9080
  labels: {app: ratings, version: v3}
  locality: us-east1/us-east1-b
  network: vpc-1
  weight: 2
  serviceAccount: ratings
"""

# As istiod writes an auto-registered VM whose health checks fail (`kubectl get -o yaml`).
AUTO_REGISTERED = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: product-vm-10.0.0.9
  namespace: shop
  annotations:
    istio.io/autoRegistrationGroup: product-vm
  labels: {app: product}
  generation: 1
spec:
  address: 10.0.0.9
  labels: {app: product}
  serviceAccount: default
status:
  observedGeneration: "1"
  conditions:
  - type: Healthy
    status: "False"
    lastProbeTime: "2024-05-01T10:00:05.123456Z"
    lastTransitionTime: "2024-05-01T10:00:05.123456Z"
    message: readiness probe failed
    observedGeneration: 1
"""


def problems(text: str) -> list[str]:
    return [str(problem) for problem in load_text(text, "m.yaml").problems]


def entry(text: str) -> WorkloadEntry:
    result = load_text(text, "m.yaml")
    assert result.problems == []
    (loaded,) = result.resources
    assert isinstance(loaded.resource, WorkloadEntry)
    return loaded.resource


def test_every_field_loads_typed() -> None:
    spec = entry(ENTRY).spec
    assert (spec.address, spec.ports, spec.weight) == ("10.0.0.7", {"http": 9080}, 2)
    assert spec.labels == {"app": "ratings", "version": "v3"}
    assert (spec.locality, spec.network, spec.service_account) == (
        "us-east1/us-east1-b",
        "vpc-1",
        "ratings",
    )


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
def test_every_istio_version_is_read(version: str) -> None:
    assert entry(ENTRY.replace("networking.istio.io/v1", f"networking.istio.io/{version}"))


@pytest.mark.parametrize(
    "address",
    ["10.0.0.7", "2001:db8::7", "vm1.vpc01.corp.net", "vm1.corp.net.", "unix:///run/ratings.sock"],
)
def test_an_address_is_an_ip_a_host_name_or_a_unix_socket(address: str) -> None:
    text = ENTRY.replace("10.0.0.7", address)
    if address.startswith("unix://"):
        text = text.replace("  ports:\n    http: 9080\n", "")
    assert entry(text).spec.address == address


def test_a_status_written_by_istiod_loads_and_says_whether_the_workload_is_healthy() -> None:
    unhealthy = entry(AUTO_REGISTERED)
    assert unhealthy.status is not None
    (condition,) = unhealthy.status.conditions
    assert (condition.type, condition.status) == ("Healthy", "False")
    assert condition.last_probe_time == "2024-05-01T10:00:05.123456Z"
    assert unhealthy.healthy is False
    assert entry(AUTO_REGISTERED.replace('status: "False"', 'status: "Unknown"')).healthy is False
    assert entry(AUTO_REGISTERED.replace('status: "False"', 'status: "True"')).healthy is True
    # Another condition says nothing about health; no status at all is a static entry.
    assert entry(AUTO_REGISTERED.replace("type: Healthy", "type: Reconciled")).healthy is True
    assert entry(ENTRY).healthy is True


def test_the_inbound_port_annotation_names_the_sidecar_port() -> None:
    annotated = ENTRY.replace(
        "  namespace: prod\n",
        '  namespace: prod\n  annotations: {gossamer.dev/inbound-port: "15006"}\n',
    )
    assert entry(annotated).inbound_port == 15006
    assert entry(ENTRY).inbound_port is None


BROKEN: list[tuple[str, str, str, list[str]]] = [
    (
        "port number out of range",
        "http: 9080",
        "http: 70000",
        [
            "m.yaml:9: WorkloadEntry ratings-vm: spec.ports.http: "
            "must be between 1 and 65535, not 70000"
        ],
    ),
    (
        "port number as a string",
        "http: 9080",
        'http: "9080"',
        [
            "m.yaml:9: WorkloadEntry ratings-vm: spec.ports.http: "
            "must be an integer, not the string '9080'"
        ],
    ),
    (
        "unknown field",
        "  address: 10.0.0.7",
        "  adress: 10.0.0.7",
        ["m.yaml:7: WorkloadEntry ratings-vm: spec.adress: unknown field (did you mean address?)"],
    ),
    (
        "port name that is not a DNS label",
        "http: 9080",
        "HTTP: 9080",
        [
            "m.yaml:9: WorkloadEntry ratings-vm: spec.ports.HTTP: a port name must be a DNS "
            "label: at most 63 lowercase letters, digits and '-', starting and ending with a "
            "letter or digit"
        ],
    ),
    (
        "an address that is a mistyped IP",
        "10.0.0.7",
        "10.0.0.300",
        [
            "m.yaml:7: WorkloadEntry ratings-vm: spec.address: '10.0.0.300' is not an IP address, "
            "a fully qualified host name (no wildcard) or unix:///path/to/socket"
        ],
    ),
    (
        "a wildcard address",
        "10.0.0.7",
        '"*.corp.net"',
        [
            "m.yaml:7: WorkloadEntry ratings-vm: spec.address: '*.corp.net' is not an IP address, "
            "a fully qualified host name (no wildcard) or unix:///path/to/socket"
        ],
    ),
    (
        "a relative unix socket path, with ports",
        "10.0.0.7",
        "unix://run/ratings.sock",
        [
            "m.yaml:7: WorkloadEntry ratings-vm: spec.address: a unix:// address needs an "
            "absolute path (unix:///run/app.sock) or @name",
            "m.yaml:8: WorkloadEntry ratings-vm: spec.ports: a unix:// address takes no ports",
        ],
    ),
    (
        "a unix socket path that is a folder",
        "  address: 10.0.0.7\n  ports:\n    http: 9080\n",
        "  address: unix:///run/ratings/\n",
        [
            "m.yaml:7: WorkloadEntry ratings-vm: spec.address: a unix:// address names a socket, "
            "not a folder"
        ],
    ),
    (
        "weight out of range",
        "weight: 2",
        "weight: -1",
        [
            "m.yaml:13: WorkloadEntry ratings-vm: spec.weight: must be between 0 and 4294967295, not -1"
        ],
    ),
    (
        "inbound port annotation that is not a port",
        "  namespace: prod\n",
        "  namespace: prod\n  annotations:\n    gossamer.dev/inbound-port: sidecar\n",
        [
            'm.yaml:7: WorkloadEntry ratings-vm: metadata.annotations["gossamer.dev/inbound-port"]: '
            "must be a port number between 1 and 65535, not 'sidecar'"
        ],
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "expected"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN]
)
def test_broken_entries_give_one_line_problems(old: str, new: str, expected: list[str]) -> None:
    assert old in ENTRY
    assert problems(ENTRY.replace(old, new, 1)) == expected


def test_an_address_is_required_unless_a_network_is_given() -> None:
    text = ENTRY.replace("  address: 10.0.0.7\n", "")
    assert problems(text.replace("  network: vpc-1\n", "")) == [
        "m.yaml:6: WorkloadEntry ratings-vm: spec.address: required (or network, for a remote "
        "workload)"
    ]
    # With a network it stands for workloads behind that network's gateway, which Gossamer
    # does not reach: a warning, since Istio accepts it.
    assert problems(text) == [
        "m.yaml:6: warning: WorkloadEntry ratings-vm: spec.address: not given: Gossamer does not "
        "reach a workload through the gateway of network vpc-1, so this one has no endpoint"
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'status: "False"',
            "status: Ok",
            "m.yaml:18: WorkloadEntry product-vm-10.0.0.9: status.conditions[0].status: "
            "must be one of 'True', 'False' or 'Unknown', not 'Ok'",
        ),
        (
            "    message: readiness probe failed\n",
            "    detail: readiness probe failed\n",
            "m.yaml:21: WorkloadEntry product-vm-10.0.0.9: status.conditions[0].detail: "
            "unknown field (known fields: type, status, lastProbeTime, lastTransitionTime, "
            "reason, message, observedGeneration)",
        ),
    ],
)
def test_a_status_is_checked_as_strictly_as_a_spec(old: str, new: str, expected: str) -> None:
    assert problems(AUTO_REGISTERED.replace(old, new)) == [expected]
