"""The partners' API documentation, as the gateway serves it on api.greencompute.local and a
partner's browser (Playwright driving Debian's chromium) shows it: the operations their key
reaches, and how to send the key."""

from __future__ import annotations

import httpx
from playwright.sync_api import Browser, expect

from .conftest import AssetsApp

API = {"host": "api.greencompute.local"}


def test_the_documentation_page_lists_the_partners_operations_in_a_browser(
    assets_app: AssetsApp, browser: Browser
) -> None:
    with httpx.Client(base_url=assets_app.gateway, headers=API, timeout=20.0) as api:
        served = api.get("/docs")
        assert served.status_code == 200, served.text
        document = api.get("/docs/openapi.json").json()
    # Only what the ApiProduct's route reaches (GET under /assetmgrms/assets) of the service's
    # own document, which also has POST, PUT and DELETE.
    assert {path: sorted(ops) for path, ops in document["paths"].items()} == {
        "/assetmgrms/assets": ["get"],
        "/assetmgrms/assets/{assetId}": ["get"],
    }
    page = browser.new_page()
    # The page is self-contained (the document is inside it): rendered as the gateway sent it.
    page.set_content(served.text)
    expect(page.locator("#title")).to_have_text("Green Compute asset records 1.2.0")
    operations = page.locator("article.operation")
    expect(operations).to_have_count(2)
    expect(operations.nth(0)).to_contain_text("List assets")
    expect(operations.nth(0).locator("td code").first).to_have_text("site")
    expect(operations.nth(1)).to_contain_text("/assetmgrms/assets/{assetId}")
    expect(page.locator("#auth")).to_contain_text("x-api-key")
    assert page.locator('article[data-method="POST"]').count() == 0
    page.close()
