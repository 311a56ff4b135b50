"""The asset solution's readings path, real processes without the mesh: the Node asset-consumer
and the Python risk service against a real broker (`gossamer events serve -f events.yaml`).

No sidecars: HTTP_PROXY is unset, so both services dial the broker ($GOSSAMER_EVENTS) directly,
and asset-mgr-ms is replaced by a tiny real HTTP server in this test (ASSET_MGR_URL) that
answers every asset lookup: ids starting `unknown` are 404, `retired` are retired, the rest
active. The token's claims are sent as the sidecar would pass them, in `x-jwt-payload`.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from ..events.harness import Backend, BrokerProcess

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "assets"
NODE = shutil.which("node")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
T = TypeVar("T")


@pytest.fixture(autouse=True)
def _node() -> None:
    if NODE is None:
        pytest.fail("the asset-consumer needs node (make test installs Debian's nodejs)")


def eventually(check: Callable[[], T], *, timeout: float = 30.0, what: str = "condition") -> T:
    """Poll `check` until it returns a truthy value, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout}s (last: {value!r})")
        time.sleep(0.05)


def claims(**values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


DEVICE = {"x-jwt-payload": claims(sub="device-7", roles=["device"])}


class _AssetLookups(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        asset_id = self.path.rsplit("/", 1)[-1]
        if not self.path.startswith("/assetmgrms/assets/") or asset_id.startswith("unknown"):
            self._answer(404, {"error": f"no asset {asset_id}"})
        else:
            status = "retired" if asset_id.startswith("retired") else "active"
            self._answer(200, {"assetId": asset_id, "name": asset_id, "status": status})

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _environment(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
    return {**env, **values}


@dataclass
class Solution:
    broker: str
    consumer: str
    risk: str
    logs: Path

    def events(self, topic: str) -> list[dict[str, Any]]:
        """Every event of the topic, from the broker."""
        url = f"{self.broker}/topics/{topic}/events"
        answer = httpx.get(url, params={"from": "beginning", "limit": "10000"}, timeout=10.0)
        answer.raise_for_status()
        return [json.loads(line) for line in answer.text.splitlines() if line.strip()]

    def post(
        self, readings: list[dict[str, Any]], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return httpx.post(
            f"{self.consumer}/assetconsumer/readings",
            json={"readings": readings},
            headers={**DEVICE, **(headers or {})},
            timeout=10.0,
        )


def _started(
    command: list[str], log: Path, env: dict[str, str], health: str
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=EXAMPLE, env=env, stdout=out, stderr=out)

    def healthy() -> bool:
        assert process.poll() is None, f"{command} exited:\n{log.read_text()}"
        try:
            return httpx.get(health, timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False

    eventually(healthy, what=f"{health} answers")
    return process


@pytest.fixture(scope="module")
def solution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Solution]:
    folder = tmp_path_factory.mktemp("assets")
    lookups = ThreadingHTTPServer(("127.0.0.1", 0), _AssetLookups)
    threading.Thread(target=lookups.serve_forever, daemon=True).start()
    broker = BrokerProcess(folder / "broker", Backend("sqlite"), "-f", str(EXAMPLE / "events.yaml"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        broker.start()
        consumer_port, risk_port = _free_port(), _free_port()
        assert NODE is not None
        processes.append(
            _started(
                [NODE, "asset-consumer/server.js"],
                folder / "asset-consumer.log",
                _environment(
                    PORT=str(consumer_port),
                    GOSSAMER_EVENTS=broker.url,
                    ASSET_MGR_URL=f"http://127.0.0.1:{lookups.server_address[1]}",
                ),
                f"http://127.0.0.1:{consumer_port}/healthz",
            )
        )
        processes.append(
            _started(
                [sys.executable, "-m", "assets.risk"],
                folder / "risk.log",
                _environment(
                    PORT=str(risk_port),
                    GOSSAMER_EVENTS=broker.url,
                    GOSSAMER_DATA=str(folder / "risk"),
                    GOSSAMER_SERVICE="risk",
                    GOSSAMER_REPLICA="risk-0",
                ),
                f"http://127.0.0.1:{risk_port}/healthz",
            )
        )
        yield Solution(
            broker.url,
            f"http://127.0.0.1:{consumer_port}",
            f"http://127.0.0.1:{risk_port}",
            folder,
        )
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        broker.kill()
        lookups.shutdown()
        lookups.server_close()


def _of(events: list[dict[str, Any]], asset_id: str) -> list[dict[str, Any]]:
    return [event for event in events if event["key"] == asset_id]


def test_a_valid_batch_becomes_one_event_per_row_continuing_the_trace(solution: Solution) -> None:
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    answer = solution.post(
        [
            {"assetId": "valid-1", "sensor": "temperature", "value": 61.5},
            {"assetId": "valid-1", "sensor": "vibration", "value": 2.25},
            {
                "assetId": "valid-2",
                "sensor": "pressure",
                "value": 5,
                "time": "2026-01-05T10:00:00.5+01:00",
            },
        ],
        {"traceparent": traceparent},
    )
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"accepted": 3, "duplicates": 0}

    events = solution.events("readings")
    first, second = _of(events, "valid-1")
    (third,) = _of(events, "valid-2")
    assert first["type"] == second["type"] == "ReadingRecorded"
    assert first["payload"]["sensor"] == "temperature" and first["payload"]["unit"] == "°C"
    assert second["payload"] == {
        "assetId": "valid-1",
        "sensor": "vibration",
        "value": 2.25,
        "unit": "mm/s",
        "time": second["payload"]["time"],
    }
    assert third["payload"]["unit"] == "bar"
    assert third["payload"]["time"] == third["time"] == "2026-01-05T09:00:00.500Z"
    for event in (first, second, third):
        version, trace_id, span_id, flags = event["headers"]["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
        assert span_id != "00f067aa0ba902b7"  # a child span of the request's


def test_a_batch_with_one_bad_row_is_refused_whole_naming_the_row(solution: Solution) -> None:
    rows: list[dict[str, Any]] = [
        {"assetId": "bad-1", "sensor": "temperature", "value": 60.0} for _ in range(5)
    ]
    rows[3] = {"assetId": "bad-1", "sensor": "temperature", "value": "hot"}
    answer = solution.post(rows)
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "readings[3].value: must be a number",
        "row": 3,
        "field": "value",
    }
    rows[3] = {"assetId": "bad-1", "sensor": "humidity", "value": 1}
    assert solution.post(rows).json()["field"] == "sensor"
    malformed = httpx.post(
        f"{solution.consumer}/assetconsumer/readings", content=b'{"readings": [', headers=DEVICE
    )
    assert malformed.status_code == 400 and "not JSON" in malformed.json()["error"]
    assert _of(solution.events("readings"), "bad-1") == []


def test_unknown_and_retired_assets_are_refused_with_422(solution: Solution) -> None:
    rows = [
        {"assetId": "known-1", "sensor": "pressure", "value": 5.1},
        {"assetId": "unknown-1", "sensor": "pressure", "value": 5.1},
    ]
    answer = solution.post(rows)
    assert answer.status_code == 422
    assert answer.json() == {
        "error": "readings[1].assetId: no asset unknown-1",
        "row": 1,
        "field": "assetId",
    }
    retired = solution.post([{"assetId": "retired-1", "sensor": "pressure", "value": 5.0}])
    assert retired.status_code == 422
    assert retired.json()["error"] == "readings[0].assetId: asset retired-1 is retired"
    assert _of(solution.events("readings"), "known-1") == []


def test_only_devices_admins_and_readings_writers_may_post(solution: Solution) -> None:
    row = [{"assetId": "auth-1", "sensor": "vibration", "value": 1.9}]
    url = f"{solution.consumer}/assetconsumer/readings"
    assert httpx.post(url, json={"readings": row}).status_code == 401
    user = {"x-jwt-payload": claims(sub="u1", roles=["user"], permission=["assets:write"])}
    assert solution.post(row, user).status_code == 403
    writer = {"x-jwt-payload": claims(sub="u2", roles=["user"], permission=["readings:write"])}
    assert solution.post(row, writer).status_code == 202


def test_a_batch_retried_with_its_idempotency_key_is_stored_once(solution: Solution) -> None:
    rows = [
        {"assetId": "retry-1", "sensor": "temperature", "value": 60.5},
        {"assetId": "retry-1", "sensor": "temperature", "value": 60.7},
    ]
    key = {"Idempotency-Key": "batch-0001"}
    assert solution.post(rows, key).json() == {"accepted": 2, "duplicates": 0}
    assert solution.post(rows, key).json() == {"accepted": 2, "duplicates": 2}
    assert solution.post(rows, {"Idempotency-Key": "batch-0002"}).json()["duplicates"] == 0
    assert len(_of(solution.events("readings"), "retry-1")) == 4


def _drifting(asset_id: str, steps: int, onset: int) -> list[list[dict[str, Any]]]:
    """Readings of an asset that runs healthy, then heats up, shakes and loses pressure control:
    one batch of the three sensors per 10 steps."""
    rng = random.Random(5)
    batches: list[list[dict[str, Any]]] = []
    for step in range(steps):
        severity = max(0.0, (step - onset) / (steps - onset))
        values = {
            "temperature": rng.gauss(60.0 + 20.0 * severity, 2.0),
            "vibration": rng.gauss(2.0 * (1 + 2.5 * severity), 0.4 * (1 + 2 * severity)),
            "pressure": rng.gauss(5.0, 0.15 * (1 + 5 * severity)),
        }
        if step % 10 == 0:
            batches.append([])
        batches[-1] += [{"assetId": asset_id, "sensor": s, "value": v} for s, v in values.items()]
    return batches


def test_drifting_readings_raise_the_risk_to_high_and_publish_risk_assessed(
    solution: Solution,
) -> None:
    assert httpx.get(f"{solution.risk}/risk/drift-1").status_code == 404
    for index, batch in enumerate(_drifting("drift-1", steps=120, onset=30)):
        span = f"{index + 1:016x}"
        answer = solution.post(batch, {"traceparent": f"00-{TRACE_ID}-{span}-01"})
        assert answer.status_code == 202, answer.text

    def assessed_high() -> dict[str, Any] | None:
        found = httpx.get(f"{solution.risk}/risk/drift-1", timeout=5.0)
        body: dict[str, Any] | None = found.json() if found.status_code == 200 else None
        done = body is not None and body["sensors"].get("pressure", {}).get("readings") == 120
        return body if done else None

    risk = eventually(assessed_high, timeout=45.0, what="the risk service read 360 readings")
    assert risk is not None
    assert risk["band"] == "high", risk
    assert set(risk["sensors"]) == {"temperature", "vibration", "pressure"}
    assert risk["sensors"]["temperature"]["mean"] > 70
    listed = httpx.get(f"{solution.risk}/risk", params={"band": "high"}).json()["assets"]
    assert "drift-1" in [asset["assetId"] for asset in listed]

    def assessments() -> list[dict[str, Any]]:
        found = _of(solution.events("risk"), "drift-1")
        return found if found and found[-1]["payload"]["band"] == "high" else []

    published = eventually(assessments, timeout=20.0, what="RiskAssessed high on `risk`")
    assert all(event["type"] == "RiskAssessed" for event in published)
    bands = [(e["payload"]["previousBand"], e["payload"]["band"]) for e in published]
    assert bands[0] == (None, "low")
    assert all(previous != band for previous, band in bands[1:])
    assert bands[-1][1] == "high"
    assert published[-1]["payload"]["score"] >= 0.7
    # The reading that raised it was posted under TRACE_ID: the trace crossed both topics.
    assert published[-1]["headers"]["traceparent"].split("-")[1] == TRACE_ID


class _SlowBroker(BaseHTTPRequestHandler):
    """A broker that holds each publish until the test releases it."""

    protocol_version = "HTTP/1.1"
    received = threading.Event()
    release = threading.Event()

    def do_POST(self) -> None:
        events = json.loads(self.rfile.read(int(self.headers["content-length"])))["events"]
        type(self).received.set()
        type(self).release.wait(20)
        results = [{"id": e["id"], "partition": 0, "offset": 0, "duplicate": False} for e in events]
        data = json.dumps({"results": results}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_sigterm_stops_accepting_and_finishes_the_request_in_flight(tmp_path: Path) -> None:
    broker = ThreadingHTTPServer(("127.0.0.1", 0), _SlowBroker)
    lookups = ThreadingHTTPServer(("127.0.0.1", 0), _AssetLookups)
    for server in (broker, lookups):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    port = _free_port()
    assert NODE is not None
    process = _started(
        [NODE, "asset-consumer/server.js"],
        tmp_path / "asset-consumer.log",
        _environment(
            PORT=str(port),
            GOSSAMER_EVENTS=f"http://127.0.0.1:{broker.server_address[1]}",
            ASSET_MGR_URL=f"http://127.0.0.1:{lookups.server_address[1]}",
        ),
        f"http://127.0.0.1:{port}/healthz",
    )
    answers: list[httpx.Response] = []
    try:
        row = [{"assetId": "slow-1", "sensor": "pressure", "value": 5.0}]
        url = f"http://127.0.0.1:{port}/assetconsumer/readings"
        posting = threading.Thread(
            target=lambda: answers.append(
                httpx.post(url, json={"readings": row}, headers=DEVICE, timeout=20.0)
            )
        )
        posting.start()
        assert _SlowBroker.received.wait(20), "the publish never reached the broker"
        process.send_signal(signal.SIGTERM)

        def refused() -> bool:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0)
            except httpx.ConnectError:
                return True
            return False

        eventually(refused, timeout=10.0, what="new connections are refused")
        assert process.poll() is None  # still finishing the request in flight
        _SlowBroker.release.set()
        posting.join(20)
        assert [a.status_code for a in answers] == [202]
        assert process.wait(10) == 0
    finally:
        _SlowBroker.release.set()
        if process.poll() is None:
            process.kill()
            process.wait(5)
        for server in (broker, lookups):
            server.shutdown()
            server.server_close()
