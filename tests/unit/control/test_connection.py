"""Which control plane and token the CLI uses: flags, then environment, then up.json, then defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gossamer.control.connection import (
    DEFAULT_SERVER,
    Connection,
    ConnectionSettingsError,
    resolve_connection,
)

ENV = {"GOSSAMER_SERVER": "http://from-env:1", "GOSSAMER_TOKEN": "env-token"}


def write_up(folder: Path, server: str = "http://from-up:2", token_file: str = "up-token") -> Path:
    (folder / ".gossamer").mkdir(parents=True, exist_ok=True)
    up = folder / ".gossamer" / "up.json"
    up.write_text(json.dumps({"server": server, "token_file": token_file}))
    (folder / token_file).write_text("up-secret\n")
    return up


def write_admin_token(folder: Path) -> Path:
    token = folder / ".gossamer" / "control-plane" / "admin-token"
    token.parent.mkdir(parents=True)
    token.write_text("admin-secret\n")
    return token


def test_flags_beat_everything(tmp_path: Path) -> None:
    write_up(tmp_path)
    found = resolve_connection("http://flag:3/", "flag-token", ENV, tmp_path)
    assert found == Connection("http://flag:3", "from --server", "flag-token", "from --token")


def test_the_environment_beats_up_json(tmp_path: Path) -> None:
    write_up(tmp_path)
    found = resolve_connection(None, None, ENV, tmp_path)
    assert (found.server, found.server_origin) == ("http://from-env:1", "from GOSSAMER_SERVER")
    assert (found.token, found.token_origin) == ("env-token", "from GOSSAMER_TOKEN")


def test_up_json_in_a_parent_folder_beats_the_defaults(tmp_path: Path) -> None:
    up = write_up(tmp_path)
    write_admin_token(tmp_path)
    below = tmp_path / "a" / "b"
    below.mkdir(parents=True)
    found = resolve_connection(None, None, {}, below)
    assert found.server == "http://from-up:2"
    assert found.server_origin.startswith(f"from {up}, written by `gossamer up`")
    # A relative token file is read from the folder `gossamer up` ran in.
    assert (found.token, found.token_origin) == ("up-secret", f"from {tmp_path / 'up-token'}")


def test_without_anything_the_defaults_are_used(tmp_path: Path) -> None:
    found = resolve_connection(None, None, {}, tmp_path)
    assert found == Connection(
        DEFAULT_SERVER,
        "the default; set --server or GOSSAMER_SERVER",
        None,
        "none found; set --token or GOSSAMER_TOKEN",
        None,
        "the system's; set GOSSAMER_CA_FILE to the mesh's trust-bundle.pem",
    )


def test_the_admin_token_of_a_local_control_plane_is_the_last_resort(tmp_path: Path) -> None:
    token = write_admin_token(tmp_path)
    found = resolve_connection(None, None, {}, tmp_path)
    assert (found.token, found.token_origin) == ("admin-secret", f"from {token}")


def test_each_value_is_chosen_on_its_own(tmp_path: Path) -> None:
    write_up(tmp_path)
    found = resolve_connection("http://flag:3", None, {}, tmp_path)
    assert (found.server, found.token) == ("http://flag:3", "up-secret")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read"),
        ("[1]", "must hold a JSON object"),
        ('{"server": 5}', "server must be a string"),
    ],
)
def test_a_broken_up_json_is_an_error_that_names_it(
    tmp_path: Path, content: str, message: str
) -> None:
    (tmp_path / ".gossamer").mkdir()
    (tmp_path / ".gossamer" / "up.json").write_text(content)
    with pytest.raises(ConnectionSettingsError, match=message) as raised:
        resolve_connection(None, None, {}, tmp_path)
    assert "up.json" in str(raised.value)


def test_a_missing_or_empty_token_file_is_an_error(tmp_path: Path) -> None:
    write_up(tmp_path, token_file="gone")
    (tmp_path / "gone").unlink()
    with pytest.raises(ConnectionSettingsError, match=r"cannot read the token file .*gone"):
        resolve_connection(None, None, {}, tmp_path)
    (tmp_path / "gone").write_text("\n")
    with pytest.raises(ConnectionSettingsError, match=r"gone .* is empty"):
        resolve_connection(None, None, {}, tmp_path)


def test_an_https_server_is_verified_with_the_ca_file_from_the_environment_or_the_local_plane(
    tmp_path: Path,
) -> None:
    env = {"GOSSAMER_SERVER": "https://plane:15010", "GOSSAMER_TOKEN": "t"}
    assert resolve_connection(None, None, env, tmp_path).ca_file is None
    root = tmp_path / ".gossamer" / "control-plane" / "ca" / "trust-bundle.pem"
    root.parent.mkdir(parents=True)
    root.write_text("-----BEGIN CERTIFICATE-----\n")
    assert resolve_connection(None, None, env, tmp_path).ca_file == root
    # Plain http needs no CA; the environment names one explicitly.
    assert resolve_connection("http://plane:1", None, env, tmp_path).ca_file is None
    chosen = resolve_connection(None, None, {**env, "GOSSAMER_CA_FILE": "/etc/mesh.pem"}, tmp_path)
    assert chosen.ca_file == Path("/etc/mesh.pem")


def test_the_trust_bundle_of_a_running_up_verifies_its_own_server(tmp_path: Path) -> None:
    state = tmp_path / ".gossamer"
    state.mkdir()
    (state / "up.json").write_text(
        '{"server": "https://127.0.0.1:15010", "ca_file": ".gossamer/ca/trust-bundle.pem"}'
    )
    found = resolve_connection(None, "t", {}, tmp_path / "sub" / "folder")
    assert found.ca_file == tmp_path / ".gossamer" / "ca" / "trust-bundle.pem"
    assert "up.json" in found.ca_origin
    # Another server is not vouched for by that mesh's roots.
    other = resolve_connection("https://elsewhere:15010", "t", {}, tmp_path)
    assert other.ca_file is None
