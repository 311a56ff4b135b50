"""`gossamer apply/get/delete` as processes against a real control plane: what a user sees."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from .cli_plane import PlaneThread, gossamer

Cli = Callable[..., subprocess.CompletedProcess[str]]

SERVICES = """\
apiVersion: v1
kind: Service
metadata:
  name: reviews
  labels: {app: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata:
  name: ratings
  labels: {app: ratings}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata:
  name: ratings
  namespace: prod
  labels: {app: ratings}
spec:
  ports: [{name: http, port: 8080}]
"""

ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: {v1}
    - destination: {host: reviews, subset: v2}
      weight: {v2}
"""


def route(v1: int = 90, v2: int = 10) -> str:
    return ROUTE.replace("{v1}", str(v1)).replace("{v2}", str(v2))


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[PlaneThread]:
    running = PlaneThread(tmp_path / "state")
    running.start()
    yield running
    running.stop()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


@pytest.fixture
def cli(plane: PlaneThread, work: Path) -> Cli:
    env = {"GOSSAMER_SERVER": plane.url, "GOSSAMER_TOKEN": plane.token}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return gossamer(*args, cwd=work, env=env)

    return run


def test_apply_creates_then_reports_unchanged_then_configured(
    cli: Cli, work: Path, plane: PlaneThread
) -> None:
    (work / "services.yaml").write_text(SERVICES)
    (work / "routes.yaml").write_text(route())

    first = cli("apply", "-f", ".")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "virtualservice.networking.istio.io/reviews created",
        "service/reviews created",
        "service/ratings created",
        "service/ratings created",
    ]

    again = cli("apply", "-f", ".")
    assert again.returncode == 0, again.stderr
    assert [line.rsplit(" ", 1)[1] for line in again.stdout.splitlines()] == ["unchanged"] * 4

    (work / "routes.yaml").write_text(route(50, 50))
    changed = cli("apply", "-f", "routes.yaml", "-f", "services.yaml")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.splitlines() == [
        "virtualservice.networking.istio.io/reviews configured",
        "service/reviews unchanged",
        "service/ratings unchanged",
        "service/ratings unchanged",
    ]
    with plane.client() as api:
        routes = api.served("networking.istio.io/v1", "VirtualService")
        assert routes is not None
        stored = api.get(routes, "default", "reviews")
    assert [r["weight"] for r in stored["spec"]["http"][0]["route"]] == [50, 50]
    assert stored["metadata"]["generation"] == 2


def test_an_invalid_manifest_applies_nothing_and_names_file_and_line(
    cli: Cli, work: Path, plane: PlaneThread
) -> None:
    (work / "services.yaml").write_text(SERVICES)
    (work / "routes.yaml").write_text(route().replace("subset: v2", "subst: v2"))

    result = cli("apply", "-f", ".")

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "routes.yaml:11: VirtualService reviews: spec.http[0].route[1].destination.subst: "
        "unknown field (did you mean subset?)",
        "invalid: 3 resources in 2 files: 1 error",
    ]
    with plane.client() as api:
        services = api.served("v1", "Service")
        assert services is not None
        assert api.list(services, None) == []


def test_get_prints_tables_yaml_json_and_names(cli: Cli, plane: PlaneThread) -> None:
    plane.seed(SERVICES + "---\n" + route())

    wide = cli("get", "svc", "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "TYPE", "PORT(S)", "SELECTOR", "AGE"]
    assert [row.split()[:4] for row in wide[1:]] == [
        ["ratings", "ClusterIP", "9080/TCP", "app=ratings"],
        ["reviews", "ClusterIP", "9080/TCP", "app=reviews"],
    ]

    selected = cli("get", "Service", "-A", "-l", "app=ratings").stdout.splitlines()
    assert selected[0].split() == ["NAMESPACE", "NAME", "TYPE", "PORT(S)", "AGE"]
    assert [row.split()[:4] for row in selected[1:]] == [
        ["default", "ratings", "ClusterIP", "9080/TCP"],
        ["prod", "ratings", "ClusterIP", "8080/TCP"],
    ]

    routes = cli("get", "VS").stdout.splitlines()
    assert routes[0].split() == ["NAME", "GATEWAYS", "HOSTS", "AGE"]
    assert routes[1].split()[:3] == ["reviews", "mesh", "reviews"]

    names = cli("get", "services", "--all-namespaces", "-o", "name")
    assert names.stdout.splitlines() == ["service/ratings", "service/reviews", "service/ratings"]

    listing = yaml.safe_load(cli("get", "svc", "-n", "prod", "-o", "yaml").stdout)
    assert listing["kind"] == "List"
    assert [item["metadata"]["namespace"] for item in listing["items"]] == ["prod"]

    one = json.loads(cli("get", "virtualservice.networking.istio.io/reviews", "-o", "json").stdout)
    assert one["kind"] == "VirtualService"
    assert one["spec"]["hosts"] == ["reviews"]


def test_what_is_not_there_is_not_found(cli: Cli) -> None:
    missing = cli("get", "vs", "nope")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        'Error from server (NotFound): virtualservices.networking.istio.io "nope" not found'
    )

    unknown = cli("get", "widgets")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith('error: the server doesn\'t have a resource type "widgets"')


def test_delete_by_manifest_and_by_kind_and_name(cli: Cli, work: Path, plane: PlaneThread) -> None:
    (work / "services.yaml").write_text(SERVICES)
    (work / "routes.yaml").write_text(route())
    plane.seed(SERVICES + "---\n" + route())

    by_name = cli("delete", "svc", "reviews")
    assert by_name.returncode == 0
    assert by_name.stdout == 'service "reviews" deleted\n'

    by_file = cli("delete", "-f", "services.yaml")
    assert by_file.returncode == 1
    assert by_file.stdout.splitlines() == [
        'service "ratings" deleted',
        'service "ratings" deleted',
    ]
    assert by_file.stderr.strip() == 'Error from server (NotFound): services "reviews" not found'

    ignored = cli("delete", "-f", ".", "--ignore-not-found")
    assert ignored.returncode == 0
    assert ignored.stdout == 'virtualservice.networking.istio.io "reviews" deleted\n'
    with plane.client() as api:
        assert all(api.list(served, None) == [] for served in api.catalog)


def test_a_wrong_or_missing_token_says_where_the_token_came_from(
    plane: PlaneThread, work: Path
) -> None:
    (work / "services.yaml").write_text(SERVICES)
    command = ("apply", "-f", "services.yaml", "--server", plane.url, "--token", "guess")
    wrong = gossamer(*command, cwd=work)
    assert wrong.returncode == 1
    # Said once, not once per object.
    assert wrong.stderr.splitlines() == [
        "Error from server (Forbidden): the bearer token is not valid here (token from --token)"
    ]

    none = gossamer("get", "svc", cwd=work, env={"GOSSAMER_SERVER": plane.url})
    assert none.returncode == 1
    assert none.stderr.startswith("Error from server (Unauthorized): a bearer token is required")
    assert none.stderr.strip().endswith("(token: none found; set --token or GOSSAMER_TOKEN)")


def test_a_server_that_is_not_there_is_named_with_where_it_came_from(work: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = gossamer("get", "svc", cwd=work, env={"GOSSAMER_SERVER": url})
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: no control plane at {url} (from GOSSAMER_SERVER)"


def test_a_running_gossamer_up_is_found_from_a_subfolder(plane: PlaneThread, work: Path) -> None:
    (work / ".gossamer").mkdir()
    up = {"server": plane.url, "token_file": str(plane.token_file)}
    (work / ".gossamer" / "up.json").write_text(json.dumps(up))
    (work / "services.yaml").write_text(SERVICES)
    inside = work / "deploy" / "prod"
    inside.mkdir(parents=True)

    result = gossamer("apply", "-f", str(work / "services.yaml"), cwd=inside)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "service/reviews created"


def test_each_object_the_server_refuses_is_reported(cli: Cli, work: Path) -> None:
    (work / "services.yaml").write_text(SERVICES.rsplit("---", 1)[0])

    result = cli("apply", "-f", "services.yaml", "-n", "Not_A_Namespace")

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"Error from server (BadRequest): error when applying services.yaml:{line}: "
        "invalid namespace 'Not_A_Namespace': must be a DNS label"
        for line in (1, 10)
    ]
