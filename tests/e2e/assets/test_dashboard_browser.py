"""The dashboard in a real browser (Playwright driving Debian's chromium): a person logs in and
watches an asset's risk band change live, without reloading the page."""

from __future__ import annotations

import random
import uuid
from urllib.parse import urlsplit

from playwright.sync_api import Browser, expect

from .conftest import AssetsApp
from .test_risk import failing, healthy, send


def test_a_logged_in_person_sees_a_risk_band_change_live(
    assets_app: AssetsApp, browser: Browser
) -> None:
    app = assets_app
    rng = random.Random(11)
    name, password, owner = app.new_user()
    asset = app.add_asset(owner, f"watched-{uuid.uuid4().hex[:6]}", site="porto")
    device = app.device()
    send(app, device, [healthy(asset["assetId"], rng) for _ in range(25)])

    # assets.localhost resolves to this machine in the browser itself: the Ingress for it.
    port = urlsplit(app.gateway).port
    page = browser.new_page()
    page.goto(f"http://assets.localhost:{port}/assetdashboard/")
    page.get_by_label("User name").first.fill(name)
    page.get_by_label("Password").first.fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#who")).to_have_text(name)

    row = page.locator(f'tr[data-asset="{asset["assetId"]}"]')
    expect(row).to_have_attribute("data-band", "low", timeout=30_000)
    expect(page.locator("#live")).to_have_class("on", timeout=10_000)

    send(app, device, [failing(asset["assetId"], rng) for _ in range(40)])
    expect(row).to_have_attribute("data-band", "high", timeout=30_000)
    expect(row.locator(".band")).to_have_text("high")

    # Logging out ends the session: the page asks for a login again.
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#login-panel")).to_be_visible()
    page.close()
