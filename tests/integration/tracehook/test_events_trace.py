"""A request's trace through events, with apps that do nothing for it: an app publishes an event
while handling a traced request, a consumer handles the event, and the consumer's call carries
the same trace id. Both apps are real processes with the startup hook on their PYTHONPATH; the
broker is `gossamer events serve`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gossamer import tracehook

from ...component.tracehook.recorder import Recorder, running_recorder
from ..events.harness import Backend, BrokerProcess

PUBLISHER = """
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from gossamer.events.client import SyncEventsClient

events = SyncEventsClient(os.environ["BROKER"])

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        events.publish("orders", {"order": 1}, key="o1", type="OrderPlaced")
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(os.environ["PORT_FILE"] + ".tmp", "w") as out:
    out.write(str(server.server_address[1]))
os.rename(os.environ["PORT_FILE"] + ".tmp", os.environ["PORT_FILE"])
server.serve_forever()
"""

CONSUMER = """
import asyncio, os, urllib.request
from gossamer.events.client import EventsClient

async def main():
    async with EventsClient(os.environ["BROKER"]) as events:
        async with events.subscribe("orders", group="shipper", from_beginning=True) as orders:
            async for event in orders:
                with urllib.request.urlopen(os.environ["SHIP"], timeout=5) as answer:
                    answer.read()
                await orders.ack(event)

asyncio.run(main())
"""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    process = BrokerProcess(tmp_path / "broker", Backend("sqlite"))
    url = process.start()
    httpx.put(f"{url}/topics/orders", json={"partitions": 1}, timeout=10).raise_for_status()
    yield url
    process.terminate()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with running_recorder() as running:
        yield running


def start_app(tmp_path: Path, name: str, code: str, **env: str) -> subprocess.Popen[bytes]:
    script = tmp_path / f"{name}.py"
    script.write_text(code)
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HTTP_PROXY")}
    environ |= {"PYTHONPATH": tracehook.STARTUP_FOLDER, **env}
    with (tmp_path / f"{name}.log").open("wb") as log:
        return subprocess.Popen([sys.executable, str(script)], env=environ, stdout=log, stderr=log)


def test_the_consumers_call_continues_the_trace_of_the_request_that_published(
    tmp_path: Path, broker: str, recorder: Recorder
) -> None:
    port_file = tmp_path / "publisher.port"
    apps = [
        start_app(tmp_path, "publisher", PUBLISHER, BROKER=broker, PORT_FILE=str(port_file)),
        start_app(tmp_path, "consumer", CONSUMER, BROKER=broker, SHIP=f"{recorder.url}/ship"),
    ]
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists():
            assert all(app.poll() is None for app in apps), (tmp_path / "publisher.log").read_text()
            assert time.monotonic() < deadline, "the publisher did not start"
            time.sleep(0.02)
        trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        answer = httpx.get(
            f"http://127.0.0.1:{port_file.read_text()}/order",
            headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"},
            timeout=10,
        )
        assert answer.status_code == 204

        deadline = time.monotonic() + 20
        while "/ship" not in recorder.received:
            assert apps[1].poll() is None, (tmp_path / "consumer.log").read_text()
            assert time.monotonic() < deadline, "the consumer made no call"
            time.sleep(0.02)
        carried = recorder.headers("/ship")["traceparent"]
        assert carried.startswith(f"00-{trace}-") and carried.endswith("-01")
        # The event is a span of its own: the consumer continues from it, not from the request.
        assert "00f067aa0ba902b7" not in carried
    finally:
        for app in apps:
            app.terminate()
        for app in apps:
            app.wait(10)
