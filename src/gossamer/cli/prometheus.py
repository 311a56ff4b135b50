"""`gossamer prometheus-config`: a prometheus.yml that scrapes every proxy the control plane knows.

The job finds its targets with Prometheus' `http_sd_configs` at the control plane's
`/discovery/v1/prometheus`, over its TLS (the mesh's trust bundle) with the read-only discovery
token, and scrapes each proxy's `/stats/prometheus`. Relabelling turns the discovery's
`__meta_gossamer_*` labels into target labels whose names no Istio metric label has
(`namespace`, `workload`, `app`, `version`, `kind`, `node_id`), so `istio_requests_total` and
the rest keep their labels as Istio names them (a clash would rename the metric's own label to
`exported_...`). With `--dashboards DIR` the Grafana dashboards that ship with Gossamer are
written there as well.
"""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer

from gossamer.cli.session import Server, fail

JOB = "gossamer-proxies"
SD_PATH = "/discovery/v1/prometheus"
PROMETHEUS_TOKEN = "prometheus-token"
LOCAL_TOKEN_FILE = Path(".gossamer/control-plane") / PROMETHEUS_TOKEN
TARGET_LABELS = ("namespace", "workload", "app", "version", "kind", "node_id")
"""Discovery labels kept as target labels: none is the name of an Istio metric label."""
DASHBOARDS = ("gossamer-mesh.json", "gossamer-service.json", "gossamer-workload.json")
_DURATION = re.compile(r"^[1-9][0-9]*(ms|s|m|h)$")


def prometheus_config(
    server: str,
    token_file: Path,
    ca_file: Path | None,
    *,
    scrape_interval: str = "15s",
    refresh_interval: str = "15s",
) -> dict[str, Any]:
    """The configuration as Prometheus reads it (a dict to dump as YAML)."""
    scheme, _, rest = server.rstrip("/").partition("://")
    sd: dict[str, Any] = {
        "url": f"{scheme}://{rest}{SD_PATH}",
        "refresh_interval": refresh_interval,
        "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
    }
    if scheme == "https":
        sd["tls_config"] = {"ca_file": str(ca_file)} if ca_file is not None else {}
    relabel = [
        {"source_labels": [f"__meta_gossamer_{name}"], "target_label": name}
        for name in TARGET_LABELS
    ]
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": JOB,
                "metrics_path": "/stats/prometheus",
                "scheme": "http",
                "honor_labels": False,
                "http_sd_configs": [sd],
                "relabel_configs": relabel,
            }
        ],
    }


def render(config: dict[str, Any], server: str) -> str:
    """The configuration as YAML, after a comment that says where it came from."""
    import yaml

    head = (
        "# Written by `gossamer prometheus-config`: every proxy of the mesh whose control plane\n"
        f"# is {server}, found through its Prometheus HTTP service discovery.\n"
    )
    return head + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def default_token_file(cwd: Path) -> Path:
    """The discovery token beside the admin token of a running `gossamer up`, else that of a
    control plane started in `cwd` with its default state folder."""
    from gossamer.control.connection import find_up_file

    up_file = find_up_file(cwd)
    if up_file is not None:
        try:
            named = json.loads(up_file.read_text(encoding="utf-8")).get("token_file")
        except (OSError, ValueError, AttributeError):
            named = None
        if isinstance(named, str) and named:
            return (up_file.parent.parent / named).parent / PROMETHEUS_TOKEN
    return cwd / LOCAL_TOKEN_FILE


def write_dashboards(folder: Path) -> list[Path]:
    """Copy the Grafana dashboards that ship with Gossamer into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in DASHBOARDS:
        target = folder / name
        target.write_bytes((resources.files("gossamer") / "dashboards" / name).read_bytes())
        written.append(target)
    return written


def prometheus_config_command(
    *,
    server: Server = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to FILE (default: print).", show_default=False),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            help="The token Prometheus sends (default: prometheus-token in the control plane's "
            "state folder, read-only; the admin token works too).",
            show_default=False,
        ),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            help="The mesh's trust bundle (default: as the CLI finds it: $GOSSAMER_CA_FILE, "
            "a running `gossamer up`'s, .gossamer/control-plane/ca/trust-bundle.pem).",
            show_default=False,
        ),
    ] = None,
    scrape_interval: Annotated[str, typer.Option(help="How often each proxy is scraped.")] = "15s",
    refresh_interval: Annotated[
        str, typer.Option(help="How often the target list is fetched again.")
    ] = "15s",
    dashboards: Annotated[
        Path | None,
        typer.Option(help="Also write the Grafana dashboards (JSON) into DIR.", show_default=False),
    ] = None,
) -> None:
    """A prometheus.yml whose job scrapes every proxy of the mesh (sidecars, gateway, VIP proxy)."""
    from gossamer.control.connection import ConnectionSettingsError, resolve_connection

    for name, value in (("scrape", scrape_interval), ("refresh", refresh_interval)):
        if not _DURATION.match(value):
            fail(f"--{name}-interval {value!r}: expected a duration such as 15s, 500ms or 1m", 2)
    cwd = Path.cwd()
    try:
        connection = resolve_connection(server, None, os.environ, cwd)
    except ConnectionSettingsError as error:
        fail(str(error))
    token = (token_file or default_token_file(cwd)).absolute()
    if not token.is_file():
        fail(
            f"no token file {token}: the control plane writes prometheus-token into its state "
            "folder when it starts; give --token-file"
        )
    roots = ca_file or connection.ca_file
    if connection.server.startswith("https://") and roots is None:
        fail("an https control plane needs the mesh's trust bundle: give --ca-file")
    config = prometheus_config(
        connection.server,
        token,
        roots.absolute() if roots is not None else None,
        scrape_interval=scrape_interval,
        refresh_interval=refresh_interval,
    )
    text = render(config, connection.server)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)
    if dashboards is not None:
        for path in write_dashboards(dashboards):
            typer.echo(f"wrote {path}", err=True)
