"""`gossamer up` of examples/hello with nothing else: tracing goes to the control plane's
built-in receiver, whose scrapes of the proxies answer `stat`, `edges` and `top` with the
proxies' own figures, and `trace` shows one request through gateway -> frontend -> greeter
(the startup hook `up` gives Python apps carries the trace across the frontend)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from gossamer.control.telemetry.prometheus import parse_requests

from .test_up_hello import gossamer, hello  # noqa: F401 - the fixture

LABELS = ("reporter", "source_workload", "destination_service_name")
REQUESTS = 200


def cli(folder: Path, *args: str) -> str:
    done = gossamer(*args, cwd=folder, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def proxies_count(folder: Path, reporter: str, source: str, service: str) -> int:
    """What the proxies themselves counted, from each one's /stats/prometheus."""
    items = json.loads(cli(folder, "proxy-status", "-o", "json"))
    total = 0
    for item in items:
        if not item.get("admin"):
            continue
        text = httpx.get(f"http://{item['admin']}/stats/prometheus", timeout=5).text
        total += sum(
            sample.requests
            for sample in parse_requests(text, LABELS)
            if sample.key == (reporter, source, service)
        )
    return total


def eventually(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def test_stat_edges_top_and_trace_of_hello_with_nothing_installed(hello: Path) -> None:  # noqa: F811
    started = gossamer("up", ".", "--detach", cwd=hello)
    assert started.returncode == 0, started.stdout + started.stderr
    gateway = json.loads((hello / ".gossamer" / "up.json").read_text())["gateway"]
    with httpx.Client(timeout=10) as http:
        for index in range(REQUESTS):
            answer = http.get(f"{gateway}/", params={"name": f"n{index}"})
            assert answer.status_code == 200, answer.text

    def agreed() -> bool:
        edges = json.loads(cli(hello, "edges", "-o", "json", "-t", "1h", "-A"))["items"]
        by_edge = {(e["source"], e["destination"]): e["requests"] for e in edges}
        seen = by_edge.get(("frontend.default", "greeter.default"), 0)
        return seen > 0 and seen == proxies_count(hello, "source", "frontend", "greeter")

    eventually(agreed)
    stat = json.loads(cli(hello, "stat", "frontend", "-o", "json", "-t", "1h"))["items"]
    [frontend] = stat
    counted = proxies_count(hello, "source", "istio-ingressgateway", "frontend")
    assert frontend["requests"] == counted >= REQUESTS
    assert frontend["successRate"] == 1.0
    assert "frontend.default" in cli(hello, "top", "--once")

    traces = json.loads(cli(hello, "trace", "--service", "greeter.default", "-o", "json"))
    assert traces["items"]
    whole = [t for t in traces["items"] if "istio-ingressgateway.istio-system" in t["services"]]
    assert whole, traces["items"]
    spans = json.loads(cli(hello, "trace", whole[0]["traceId"], "-o", "json"))["spans"]
    assert {(s["kind"], s["service"]) for s in spans} >= {
        ("CLIENT", "istio-ingressgateway.istio-system"),
        ("SERVER", "frontend.default"),
        ("CLIENT", "frontend.default"),
        ("SERVER", "greeter.default"),
    }
    assert len({s["traceId"] for s in spans}) == 1
    stopped = gossamer("down", cwd=hello)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
