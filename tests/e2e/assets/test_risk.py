"""Readings in, risk bands out: an asset drifting toward failure is seen to reach the high band
through the gateway, in the dashboard's view, and in the history's SQL."""

from __future__ import annotations

import random
import uuid
from typing import Any

from .conftest import AssetsApp, Tokens, eventually


def healthy(asset_id: str, rng: random.Random) -> list[dict[str, Any]]:
    return [
        {"assetId": asset_id, "sensor": "temperature", "value": rng.gauss(60.0, 1.0)},
        {"assetId": asset_id, "sensor": "vibration", "value": rng.gauss(2.0, 0.2)},
        {"assetId": asset_id, "sensor": "pressure", "value": rng.gauss(5.0, 0.08)},
    ]


def failing(asset_id: str, rng: random.Random) -> list[dict[str, Any]]:
    return [
        {"assetId": asset_id, "sensor": "temperature", "value": rng.gauss(85.0, 2.0)},
        {"assetId": asset_id, "sensor": "vibration", "value": rng.gauss(7.0, 1.5)},
        {"assetId": asset_id, "sensor": "pressure", "value": rng.gauss(5.0, 1.0)},
    ]


def send(app: AssetsApp, device: Tokens, batches: list[list[dict[str, Any]]]) -> None:
    for batch in batches:
        answer = app.http.post(
            "/assetconsumer/readings", headers=device.headers, json={"readings": batch}
        )
        assert answer.status_code == 202, answer.text


def band_in_view(app: AssetsApp, viewer: Tokens, asset_id: str) -> str | None:
    listed = app.http.get("/assetdashboard/api/assets", headers=viewer.headers).json()
    [mine] = [a for a in listed["assets"] if a["assetId"] == asset_id] or [None]
    return None if mine is None else mine["band"]


def test_an_asset_drifting_toward_failure_reaches_the_high_band(assets_app: AssetsApp) -> None:
    app = assets_app
    rng = random.Random(3)
    _, _, owner = app.new_user()
    site = f"site-{uuid.uuid4().hex[:6]}"
    asset = app.add_asset(owner, f"drifting-{site}", site=site, kind="turbine")
    asset_id = asset["assetId"]
    device = app.device()

    send(app, device, [healthy(asset_id, rng) for _ in range(25)])
    eventually(lambda: band_in_view(app, owner, asset_id) == "low", 30, "assessed low")
    send(app, device, [failing(asset_id, rng) for _ in range(40)])
    eventually(lambda: band_in_view(app, owner, asset_id) == "high", 30, "assessed high")

    detail = app.http.get(f"/assetdashboard/api/assets/{asset_id}", headers=owner.headers)
    assert detail.status_code == 200, detail.text
    risk = detail.json()["risk"]
    assert risk["band"] == "high" and risk["score"] >= 0.7
    # Well past a healthy pump's 60 +- 2 degrees (the band may turn high before the mean
    # has caught up with the 85 degrees being sent).
    assert risk["sensors"]["temperature"]["mean"] > 66

    # The note's question, in SQL over the topics' history: high risk per site this week.
    rows = app.query(
        "SELECT a.data.site::VARCHAR AS site, count(DISTINCT r.key) AS assets "
        "FROM risk r JOIN assets a ON a.key = r.key "
        "WHERE r.data.band::VARCHAR = 'high' AND r.time >= now() - INTERVAL 7 DAY "
        f"AND a.data.site::VARCHAR = '{site}' GROUP BY ALL"
    )
    assert rows == [[site, 1]]
    bands = app.query(f"SELECT data.band::VARCHAR FROM risk WHERE key = '{asset_id}' ORDER BY time")
    assert bands[0] == ["low"] and bands[-1] == ["high"]
