"""The prometheus.yml that `gossamer prometheus-config` writes, and where it finds its files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gossamer.cli.app import app
from gossamer.cli.prometheus import (
    SD_PATH,
    TARGET_LABELS,
    default_token_file,
    prometheus_config,
)
from gossamer.control.api.discovery_sd import PATH
from gossamer.proxy.stats import REQUEST_LABELS


def test_the_job_discovers_over_tls_with_the_token_and_keeps_istios_labels() -> None:
    config = prometheus_config(
        "https://127.0.0.1:15010/", Path("/s/prometheus-token"), Path("/s/ca/trust-bundle.pem")
    )
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/stats/prometheus"
    assert job["honor_labels"] is False
    assert job["http_sd_configs"] == [
        {
            "url": "https://127.0.0.1:15010/discovery/v1/prometheus",
            "refresh_interval": "15s",
            "authorization": {"type": "Bearer", "credentials_file": "/s/prometheus-token"},
            "tls_config": {"ca_file": "/s/ca/trust-bundle.pem"},
        }
    ]
    kept = {rule["target_label"] for rule in job["relabel_configs"]}
    assert kept == set(TARGET_LABELS)
    # A target label with the name of a metric's label would rename the metric's to exported_*.
    assert not kept & {*REQUEST_LABELS, "le", "cluster", "result"}
    assert SD_PATH == PATH


def test_a_plain_http_control_plane_gets_no_tls_config() -> None:
    config = prometheus_config("http://cp:15010", Path("/t"), None, scrape_interval="5s")
    [sd] = config["scrape_configs"][0]["http_sd_configs"]
    assert "tls_config" not in sd
    assert config["global"]["scrape_interval"] == "5s"


def test_the_token_file_is_found_beside_the_admin_token_of_a_running_up(tmp_path: Path) -> None:
    state = tmp_path / ".gossamer"
    state.mkdir()
    (state / "up.json").write_text(
        json.dumps({"token_file": ".gossamer/control-plane/admin-token"})
    )
    nested = tmp_path / "app" / "src"
    nested.mkdir(parents=True)
    expected = tmp_path / ".gossamer" / "control-plane" / "prometheus-token"
    assert default_token_file(nested) == expected
    elsewhere = tmp_path.parent / f"{tmp_path.name}-other"
    elsewhere.mkdir()
    assert default_token_file(elsewhere) == elsewhere / ".gossamer/control-plane/prometheus-token"


def test_the_command_writes_the_file_and_the_dashboards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "prometheus-token"
    token.write_text("secret\n")
    monkeypatch.chdir(tmp_path)
    for name in ("GOSSAMER_SERVER", "GOSSAMER_TOKEN", "GOSSAMER_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    out, boards = tmp_path / "prometheus.yml", tmp_path / "boards"
    result = CliRunner().invoke(
        app,
        [
            *("prometheus-config", "-s", "https://cp:15010", "--token-file", str(token)),
            *("--ca-file", "ca.pem", "-o", str(out), "--dashboards", str(boards)),
        ],
    )
    assert result.exit_code == 0, result.output
    written = yaml.safe_load(out.read_text())
    [sd] = written["scrape_configs"][0]["http_sd_configs"]
    assert sd["tls_config"]["ca_file"] == str(tmp_path / "ca.pem")
    assert sorted(path.name for path in boards.iterdir()) == [
        "gossamer-mesh.json",
        "gossamer-service.json",
        "gossamer-workload.json",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scrape-interval", "fast"], "--scrape-interval 'fast': expected a duration"),
        (["--token-file", "missing"], "no token file"),
        ([], "give --ca-file"),
    ],
)
def test_refusals_say_what_is_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("GOSSAMER_SERVER", "GOSSAMER_TOKEN", "GOSSAMER_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "token").write_text("t\n")
    defaults = ["--token-file", "token"] if "--token-file" not in args else []
    result = CliRunner().invoke(
        app, ["prometheus-config", "-s", "https://elsewhere:1", *defaults, *args]
    )
    assert result.exit_code != 0
    assert re.search(re.escape(message), result.output), result.output
