"""`gossamer describe` and `gossamer analyze` as processes against a real control plane."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gossamer.cli.served_objects import object_yaml

from .cli_plane import PlaneThread, gossamer

Cli = Callable[..., subprocess.CompletedProcess[str]]

CANARY = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1}
spec:
  selector: {matchLabels: {app: reviews, version: v1}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec: {containers: [{name: reviews, command: [reviews, --version, "1"]}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v2}
spec:
  selector: {matchLabels: {app: reviews, version: v2}}
  template:
    metadata: {labels: {app: reviews, version: v2}}
    spec: {containers: [{name: reviews, command: [reviews, --version, "2"]}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /api}
    route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: {SUBSET}}
      weight: 10
    timeout: 10s
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,reset"}
"""

REVIEWS = "reviews.default.svc.cluster.local:9080"


def canary(subset: str = "v2") -> str:
    return CANARY.replace("{SUBSET}", subset)


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[PlaneThread]:
    running = PlaneThread(tmp_path / "state")
    running.start()
    yield running
    running.stop()


@pytest.fixture
def cli(plane: PlaneThread, tmp_path: Path) -> Cli:
    env = {"GOSSAMER_SERVER": plane.url, "GOSSAMER_TOKEN": plane.token}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return gossamer(*args, cwd=tmp_path, env=env)

    return run


def test_describe_shows_the_routes_a_sidecar_has_for_a_virtual_service(
    cli: Cli, plane: PlaneThread
) -> None:
    plane.seed(canary())

    result = cli("describe", "vs", "reviews")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        "Name:         reviews",
        "Namespace:    default",
        "Kind:         VirtualService (networking.istio.io/v1)",
    ]
    start = lines.index(f"  {REVIEWS}") + 1
    routes = lines[start : lines.index("", start)]
    assert routes == [
        "    default/reviews/0",
        "      match:          uri prefix /api",
        f"      destinations:   {REVIEWS} subset v1  weight 90",
        f"                      {REVIEWS} subset v2  weight 10",
        "      timeout:        10s",
        "      retries:        3 attempts on 5xx, reset; 2s per try",
    ]
    # No proxy is connected to this control plane: describe says so.
    assert lines[-2:] == [
        "Proxies (connected now: name, role, state, version acknowledged):",
        "  none",
    ]


def test_describe_a_service_that_no_virtual_service_routes(cli: Cli, plane: PlaneThread) -> None:
    plane.seed(canary().rsplit("---", 1)[0])

    lines = cli("describe", "service", "reviews").stdout.splitlines()

    routes = lines[lines.index(f"  {REVIEWS}") + 1 :]
    assert routes[:3] == [
        "    default (no VirtualService)",
        "      match:          any request",
        f"      destinations:   {REVIEWS}  weight 100",
    ]


def test_analyze_finds_a_route_to_a_subset_no_rule_defines(cli: Cli, plane: PlaneThread) -> None:
    plane.seed(canary())
    clean = cli("analyze")
    assert clean.returncode == 0
    assert clean.stdout == "ok: 5 resources in namespace default: valid\n"

    plane.seed(canary("v3"))
    broken = cli("analyze", "-A")

    assert broken.returncode == 1
    assert broken.stdout.splitlines() == [
        "default/virtualservice.networking.istio.io/reviews:24: VirtualService reviews: "
        "spec.http[0].route[1].destination.subset: DestinationRule reviews "
        "(default/destinationrule.networking.istio.io/reviews:1) defines no subset v3 "
        "(subsets: v1, v2); requests to this route would fail",
        "invalid: 5 resources in 1 namespace: 1 error",
    ]
    # The line is one of what `gossamer get` prints for the object.
    with plane.client() as api:
        routes = api.served("networking.istio.io/v1", "VirtualService")
        assert routes is not None
        printed = object_yaml(api.get(routes, "default", "reviews")).splitlines()
    assert printed[23].strip() == "subset: v3"

    elsewhere = cli("analyze", "-n", "prod", "-o", "json")
    assert elsewhere.returncode == 0
    assert json.loads(elsewhere.stdout) == {
        "valid": True,
        "namespace": "prod",
        "resources": [],
        "problems": [],
    }


POLICIES = """\
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews-metrics}
spec:
  selector: {matchLabels: {app: reviews}}
  portLevelMtls: {"9090": {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-readers}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/productpage]}}]
    to: [{operation: {methods: [GET]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: [/admin/*]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-only}
spec:
  selector: {matchLabels: {app: ratings}}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: reviews-jwt}
spec:
  selector: {matchLabels: {app: reviews}}
  jwtRules:
  - issuer: https://issuer.example
    jwksUri: https://issuer.example/jwks.json
    audiences: [reviews]
"""


def test_describe_workload_shows_its_identity_mtls_mode_and_the_policies_that_apply(
    cli: Cli, plane: PlaneThread
) -> None:
    plane.seed(canary() + POLICIES)

    result = cli("describe", "workload", "reviews-v1")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = lines.index("Security:")
    section = lines[start : lines.index("", start)]
    assert section == [
        "Security:",
        "  Identity:       spiffe://cluster.local/ns/default/sa/default",
        "  mTLS:           STRICT; port 9090: PERMISSIVE (effective PeerAuthentication)",
        "  Certificates:   none: no proxy of this workload is connected",
        "  Authorization:",
        "    DENY   default/no-admin (1 rule)",
        "    ALLOW  default/reviews-readers (1 rule)",
        "    (an ALLOW policy applies: a request none of them allows is denied)",
        "  Request authentication:",
        "    default/reviews-jwt: issuer https://issuer.example "
        "(https://issuer.example/jwks.json; reviews)",
    ]
