"""Which control plane a client talks to, with which token, and how each was found.

The server: `--server`, then `$GOSSAMER_SERVER`, then the `.gossamer/up.json` a running
`gossamer up` wrote (in the current folder or a parent), then the local default. The token:
`--token`, then `$GOSSAMER_TOKEN`, then the token file up.json names, then the admin token of a
control plane started in the current folder. Each value keeps its origin, so that a failure can
say where the wrong server or token came from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SERVER = "https://127.0.0.1:15010"
SERVER_ENV = "GOSSAMER_SERVER"
TOKEN_ENV = "GOSSAMER_TOKEN"
CA_ENV = "GOSSAMER_CA_FILE"
LOCAL_CA_FILE = Path(".gossamer/control-plane/ca/trust-bundle.pem")
"""The mesh's roots of a control plane started in the current folder (https servers)."""
UP_FILE = Path(".gossamer/up.json")
"""Written by `gossamer up` in the folder it was started from."""
ADMIN_TOKEN_FILE = Path(".gossamer/control-plane/admin-token")
"""Where `gossamer control-plane` keeps its admin token when started with the default state."""


class ConnectionSettingsError(Exception):
    """A place that should name the server or token cannot be read; the message says which."""


@dataclass(frozen=True, slots=True)
class Connection:
    """A server URL and a bearer token (None when none was found), each with its origin."""

    server: str
    server_origin: str
    """How the server was found, for messages: `from --server`, `the default; ...`."""
    token: str | None
    token_origin: str
    ca_file: Path | None = None
    """PEM roots to verify an https server with; None: the system's."""
    ca_origin: str = ""
    """How the roots were found, for messages."""


@dataclass(frozen=True, slots=True)
class _UpFile:
    """What a running `gossamer up` says about itself."""

    path: Path
    server: str | None
    token_file: Path | None
    ca_file: Path | None = None


def resolve_connection(
    server: str | None, token: str | None, env: Mapping[str, str], cwd: Path
) -> Connection:
    """The server and token to use, from flags, the environment, up.json and the defaults."""
    up = _read_up_file(find_up_file(cwd))
    chosen_server, server_origin = _choose_server(server, env, up)
    chosen_token, token_origin = _choose_token(token, env, up, cwd)
    ca_file, ca_origin = _choose_roots(chosen_server, env, up, cwd)
    return Connection(
        chosen_server.rstrip("/"),
        server_origin,
        chosen_token,
        token_origin,
        ca_file,
        ca_origin,
    )


def _choose_roots(
    server: str, env: Mapping[str, str], up: _UpFile | None, cwd: Path
) -> tuple[Path | None, str]:
    """The roots an https server is verified with: $GOSSAMER_CA_FILE, then the trust bundle
    of a running `up` (for its own server), then that of a control plane started here."""
    if env.get(CA_ENV):
        return Path(env[CA_ENV]), f"from {CA_ENV}"
    if not server.startswith("https://"):
        return None, ""
    same_server = up is not None and (up.server or "").rstrip("/") == server.rstrip("/")
    if up is not None and up.ca_file is not None and same_server:
        return up.ca_file, f"named by {up.path}"
    if (cwd / LOCAL_CA_FILE).is_file():
        return cwd / LOCAL_CA_FILE, "of the control plane started in this folder"
    return None, f"the system's; set {CA_ENV} to the mesh's trust-bundle.pem"


def find_up_file(cwd: Path) -> Path | None:
    """The nearest `.gossamer/up.json` in `cwd` or one of its parents."""
    for folder in (cwd, *cwd.parents):
        candidate = folder / UP_FILE
        if candidate.is_file():
            return candidate
    return None


def _choose_server(flag: str | None, env: Mapping[str, str], up: _UpFile | None) -> tuple[str, str]:
    if flag:
        return flag, "from --server"
    if env.get(SERVER_ENV):
        return env[SERVER_ENV], f"from {SERVER_ENV}"
    if up is not None and up.server:
        return up.server, f"from {up.path}, written by `gossamer up`; is it still running?"
    return DEFAULT_SERVER, f"the default; set --server or {SERVER_ENV}"


def _choose_token(
    flag: str | None, env: Mapping[str, str], up: _UpFile | None, cwd: Path
) -> tuple[str | None, str]:
    if flag:
        return flag, "from --token"
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV], f"from {TOKEN_ENV}"
    if up is not None and up.token_file is not None:
        return _read_token(up.token_file, f"named by {up.path}"), f"from {up.token_file}"
    admin = cwd / ADMIN_TOKEN_FILE
    if admin.is_file():
        return _read_token(admin, "the control plane's admin token"), f"from {admin}"
    return None, f"none found; set --token or {TOKEN_ENV}"


def _read_up_file(path: Path | None) -> _UpFile | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConnectionSettingsError(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise ConnectionSettingsError(f"{path} must hold a JSON object")
    server, token_file = data.get("server"), data.get("token_file")
    ca_file = data.get("ca_file")
    for field, value in (("server", server), ("token_file", token_file), ("ca_file", ca_file)):
        if value is not None and not isinstance(value, str):
            raise ConnectionSettingsError(f"{path}: {field} must be a string")
    # Relative files are relative to the folder `gossamer up` was started from.
    root = path.parent.parent
    return _UpFile(
        path,
        server,
        root / token_file if token_file else None,
        root / ca_file if ca_file else None,
    )


def _read_token(path: Path, what: str) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ConnectionSettingsError(
            f"cannot read the token file {path} ({what}): {error}"
        ) from None
    if not token:
        raise ConnectionSettingsError(f"the token file {path} ({what}) is empty")
    return token
