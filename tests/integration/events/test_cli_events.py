"""`gossamer events` as a user runs it against a broker process started from manifests."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .harness import BrokerProcess

REPO = Path(__file__).resolve().parents[3]
GOSSAMER = Path(sys.executable).parent / "gossamer"
ASSETS = REPO / "examples" / "assets" / "events.yaml"


def run(
    *args: str, server: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GOSSAMER_EVENTS"}
    if server is not None:
        env["GOSSAMER_EVENTS"] = server
    result = subprocess.run(
        [str(GOSSAMER), "events", *args],
        capture_output=True, text=True, timeout=60, check=False, env=env, input=stdin,
    )  # fmt: skip
    assert "Traceback" not in result.stderr + result.stdout
    return result


@pytest.fixture
def served(broker_process: Callable[..., BrokerProcess], tmp_path: Path) -> str:
    return broker_process(tmp_path / "data", "-f", str(ASSETS)).url


def test_topics_come_from_the_manifests(served: str) -> None:
    result = run("topics", server=served)
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert names == [
        "assets",
        "credentials",
        "mail-out",
        "readings",
        "risk",
        "sagas",
        "users",
        "users-dead-letter",
    ]
    listed = json.loads(run("topics", "-o", "json", server=served).stdout)
    assert {t["name"]: t["partitions"] for t in listed}["readings"] == 6


def test_publish_consume_query_and_lag(served: str) -> None:
    published = run(
        "publish", "users", '{"userId": "u1", "email": "a@example.com"}',
        "--key", "u1", "--type", "UserAdded", server=served,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    assert published.stdout.startswith("users/")
    assert "@0 id=" in published.stdout
    lines = '{"userId": "u2"}\n{"userId": "u3"}\n'
    assert (
        run("publish", "users", "-", "--type", "UserAdded", server=served, stdin=lines).returncode
        == 0
    )

    consumed = run(
        "consume", "users", "--group", "mailer", "--from-beginning", "-n", "3", server=served
    )
    assert consumed.returncode == 0, consumed.stderr
    events = [json.loads(line) for line in consumed.stdout.splitlines()]
    assert sorted(e["payload"]["userId"] for e in events) == ["u1", "u2", "u3"]
    assert all(e["type"] == "UserAdded" and "traceparent" in e["headers"] for e in events)

    lag = run("lag", "--group", "mailer", "-o", "json", server=served)
    assert json.loads(lag.stdout)[0]["lag"] == 0

    query = run(
        "query", "SELECT type, count(*) AS n FROM users GROUP BY type", "-o", "csv", server=served
    )
    assert query.stdout == "type,n\nUserAdded,3\n"
    table = run("query", "SELECT count(*) AS n FROM users", server=served)
    assert table.stdout.split()[:2] == ["n", "3"]

    tail = run("tail", "users", "--from", "beginning", "-n", "1", server=served)
    assert json.loads(tail.stdout)["topic"] == "users"


def test_a_schema_violation_prints_each_field_and_exits_1(served: str) -> None:
    result = run("publish", "users", '{"email": 3}', server=served)
    assert result.returncode == 1
    assert result.stderr == (
        "error: payload.email: 3 is not of type 'string'\n"
        "  payload.userId: 'userId' is a required property\n"
    )


def test_the_server_comes_from_the_option_then_the_environment(served: str) -> None:
    assert run("topics", "--server", served, server="http://127.0.0.1:9").returncode == 0
    unreachable = run("topics", server="http://127.0.0.1:9")
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("error: no broker at http://127.0.0.1:9")


def test_without_a_server_the_default_port_is_used() -> None:
    result = run("lag")
    if result.returncode == 0:
        pytest.fail("a broker is already listening on 127.0.0.1:15070")
    assert "no broker at http://127.0.0.1:15070" in result.stderr


def test_serve_refuses_invalid_manifests_with_their_line(tmp_path: Path) -> None:
    bad = tmp_path / "topics.yaml"
    bad.write_text(
        "apiVersion: gossamer.dev/v1alpha1\nkind: Topic\nmetadata: {name: t}\nspec:\n  partitons: 2\n"
    )
    result = run("serve", "--data", str(tmp_path / "d"), "--listen", "127.0.0.1:0", "-f", str(bad))
    assert result.returncode == 1
    assert (
        f"{bad}:5: Topic t: spec.partitons: unknown field (did you mean partitions?)"
        in result.stderr
    )


def test_sigterm_stops_the_broker_cleanly(
    broker_process: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    process = broker_process(tmp_path / "data")
    assert process.terminate() == 0
    assert not (tmp_path / "data" / "log.sqlite-wal").exists() or (
        (tmp_path / "data" / "log.sqlite-wal").stat().st_size == 0
    )  # checkpointed on the way out
