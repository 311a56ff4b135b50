"""The dashboard in a real browser (Playwright driving Debian's chromium) against `gossamer up`
of examples/hello under steady traffic: no token shows nothing, a wrong one is refused, the
admin token shows the graph gateway -> frontend -> greeter and a trace's waterfall through all
three; the greeter's replicas stopped turns it red; `gossamer dashboard`'s one-time link logs
in once, as a session that cannot write."""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from .test_up_hello import gossamer, hello  # noqa: F401 - the fixture

GATEWAY = "istio-ingressgateway.istio-system"
FRONTEND = "frontend.default"
GREETER = "greeter.default"
SLOW = 30_000
"""What a view may take to show something: scrapes run every 5 s on a busy machine."""


def without_greeters(folder: Path) -> Path:
    """app.yaml with no greeter replica: the frontend's calls to the greeter fail (503, no
    healthy upstream). (A VirtualService fault would do as well, but the proxies report an
    injected abort with an unknown destination service, so no edge to the greeter shows it.)"""
    text = (folder / "app.yaml").read_text()
    for name, replicas in (("greeter-v1", 2), ("greeter-v2", 1)):
        before = f"name: {name}\nspec:\n  replicas: {replicas}"
        assert before in text
        text = text.replace(before, f"name: {name}\nspec:\n  replicas: 0")
    path = folder / "no-greeters.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def mesh(hello: Path) -> Iterator[dict[str, str]]:  # noqa: F811 - the fixture
    """examples/hello up, with requests through the gateway all along (about 20 a second)."""
    started = gossamer("up", ".", "--detach", cwd=hello)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "/dashboard/" in started.stdout, started.stdout
    up = json.loads((hello / ".gossamer" / "up.json").read_text())
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=up["gateway"], timeout=10) as http:
            while not stop.wait(0.05):
                # Failures are what the test makes; the dashboard is what it checks.
                with contextlib.suppress(httpx.HTTPError):
                    http.get("/", params={"name": "dash"})

    token = Path(up["token_file"]).read_text().strip()
    assert token not in started.stdout
    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        yield {"server": up["server"], "token": token}
    finally:
        stop.set()
        worker.join(15)


def new_page(browser: Browser) -> Page:
    # The control plane's certificate is from the mesh's own CA, which chromium does not know.
    return browser.new_context(ignore_https_errors=True).new_page()


def log_in(page: Page, token: str) -> None:
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Log in").click()


def open_a_whole_trace(page: Page) -> None:
    """Open a trace with a span from every hop. Each proxy exports its spans on its own schedule,
    so the newest traces are often listed before every hop has reported; and the list is redrawn
    as spans arrive, so a click can land on the row that took the chosen one's place."""
    whole = page.locator("#traces tbody tr", has_text=GATEWAY)
    whole = whole.filter(has_text=FRONTEND).filter(has_text=GREETER)
    waterfall = page.locator("#spans")
    deadline = time.monotonic() + SLOW / 1000
    while True:
        whole.first.click(timeout=SLOW)
        services = {GATEWAY, FRONTEND, GREETER}
        with contextlib.suppress(AssertionError):
            for service in services:
                row = waterfall.locator(f'.span-row[data-service="{service}"]').first
                expect(row).to_be_visible(timeout=2_000)
            return
        assert time.monotonic() < deadline, "no trace with a span from every hop opened"


def test_the_dashboard_shows_hello_and_a_failing_greeter_turns_red_and_links_log_in_once(
    mesh: dict[str, str],
    browser: Browser,
    hello: Path,  # noqa: F811 - the fixture
) -> None:
    page = new_page(browser)
    page.goto(f"{mesh['server']}/dashboard/")
    expect(page.locator("#login-panel")).to_be_visible()
    expect(page.locator("#tabs")).to_be_hidden()
    expect(page.get_by_role("button", name="Log out")).to_be_hidden()
    expect(page.locator("#graph .node")).to_have_count(0)

    log_in(page, "not-the-admin-token")
    expect(page.locator("#login-error")).to_have_text(
        "Token refused: the bearer token is not valid here"
    )
    expect(page.locator("#tabs")).to_be_hidden()

    log_in(page, mesh["token"])
    expect(page.locator("#who")).to_have_text("admin")
    graph = page.locator("#graph")
    for node in (GATEWAY, FRONTEND, GREETER):
        expect(graph.locator(f'.node[data-id="{node}"]')).to_be_visible(timeout=SLOW)
    to_greeter = graph.locator(f'.edge[data-source="{FRONTEND}"][data-destination="{GREETER}"]')
    expect(to_greeter).to_have_attribute("data-health", "ok", timeout=SLOW)
    to_frontend = graph.locator(f'.edge[data-source="{GATEWAY}"][data-destination="{FRONTEND}"]')
    expect(to_frontend).to_have_attribute("data-health", "ok")
    expect(to_greeter.locator("text")).to_contain_text("rps")

    page.get_by_role("button", name="Services").click()
    greeter_row = page.locator(f'#services tr[data-service="{GREETER}"]')
    expect(greeter_row).to_be_visible(timeout=SLOW)
    expect(greeter_row.locator("svg.spark")).to_have_count(3)

    page.get_by_role("button", name="Traces").click()
    page.get_by_role("textbox", name="service").fill(GREETER)
    page.get_by_role("textbox", name="service").press("Enter")
    open_a_whole_trace(page)
    spans = page.locator("#spans")
    for service in (GATEWAY, FRONTEND, GREETER):
        expect(spans.locator(f'.span-row[data-service="{service}"]').first).to_be_visible()

    page.get_by_role("button", name="Proxies").click()
    expect(page.locator('#proxies tr[data-state="SYNCED"]').first).to_be_visible(timeout=SLOW)

    page.get_by_role("button", name="Config").click()
    page.locator('#kinds li[data-kind="VirtualService"]').click(timeout=SLOW)
    page.locator('#objects li[data-name="greeter"]').click()
    expect(page.locator("#object")).to_contain_text("kind: VirtualService")

    applied = gossamer("apply", "-f", str(without_greeters(hello)), cwd=hello, timeout=30)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    page.get_by_role("button", name="Graph").click()
    expect(to_greeter).to_have_attribute("data-health", "fail", timeout=SLOW)
    expect(graph.locator(f'.node[data-id="{GREETER}"]')).to_have_attribute("data-health", "fail")

    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#login-panel")).to_be_visible()
    expect(page.locator("#graph .node")).to_have_count(0)
    page.context.close()

    check_one_time_link(browser, hello)


def check_one_time_link(browser: Browser, folder: Path) -> None:
    """`gossamer dashboard`'s link logs a tab in once, as a session that reads and cannot write."""
    printed = gossamer("dashboard", cwd=folder, timeout=30)
    assert printed.returncode == 0, printed.stdout + printed.stderr
    words = printed.stdout.split()
    [link] = [word for word in words if "#login=" in word]

    page = new_page(browser)
    page.goto(link)
    expect(page.locator("#who")).to_have_text("dashboard session")
    assert "#login=" not in page.url
    expect(page.locator("#tabs")).to_be_visible()

    again = new_page(browser)
    again.goto(link)
    expect(again.locator("#login-error")).to_contain_text("Login link refused")
    expect(again.locator("#tabs")).to_be_hidden()

    session = page.evaluate("sessionStorage.getItem('gossamer.dashboard.token')")
    up = json.loads((folder / ".gossamer" / "up.json").read_text())
    verify = ssl.create_default_context(cafile=up["ca_file"])
    with httpx.Client(base_url=up["server"], verify=verify, timeout=10) as http:
        bearer = {"Authorization": f"Bearer {session}"}
        listed = http.get("/api/v1/namespaces/default/services", headers=bearer)
        assert listed.status_code == 200, listed.text
        removed = http.delete("/api/v1/namespaces/default/services/greeter", headers=bearer)
        assert removed.status_code == 403, removed.text
    page.context.close()
    again.context.close()
