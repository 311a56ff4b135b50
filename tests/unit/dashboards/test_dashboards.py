"""The Grafana dashboards are what Grafana imports: a Prometheus data source variable that every
panel and variable query uses, unique ids, panels on the 24-column grid. (Their queries run
against a real Prometheus in tests/e2e/test_prometheus.py; Grafana itself is not run.)"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from gossamer.cli.prometheus import DASHBOARDS

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def load(name: str) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(
        (resources.files("gossamer") / "dashboards" / name).read_text(encoding="utf-8")
    )
    return board


def every_panel(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [inner for panel in board["panels"] for inner in [panel, *panel.get("panels", [])]]


def test_every_dashboard_file_ships_and_none_is_left_out() -> None:
    shipped = sorted(
        path.name
        for path in (resources.files("gossamer") / "dashboards").iterdir()
        if path.name.endswith(".json")
    )
    assert shipped == sorted(DASHBOARDS)
    assert len({load(name)["uid"] for name in DASHBOARDS}) == len(DASHBOARDS)


@pytest.mark.parametrize("name", DASHBOARDS)
def test_a_dashboard_grafana_imports(name: str) -> None:
    board = load(name)
    assert board["schemaVersion"] >= 36
    assert board["title"].startswith("Gossamer / ")
    assert "id" not in board  # Grafana gives one on import
    first, *others = board["templating"]["list"]
    assert (first["name"], first["type"], first["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    for variable in others:
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE
        assert variable["query"]["query"].startswith("label_values(")
    panels = every_panel(board)
    assert len({panel["id"] for panel in panels}) == len(panels)
    queries = 0
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in ("stat", "timeseries")
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["description"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE
            assert target["expr"] and target["refId"]
            queries += 1
    assert queries >= 10
