"""Trace propagation inside Python apps that `gossamer up` starts, without touching their code.

`up` puts the folder `startup/` first on an app's PYTHONPATH; its `sitecustomize` calls
`install()`, which patches servers (to take a request's trace headers into a ContextVar) and
clients (to send them on), each only when the app imports it. docs/observability.md, "Traces
without touching the app", says what is covered.
"""

from __future__ import annotations

import importlib
import os
import sys

from gossamer.tracehook.patching import Patcher, PatchOnImport

TYPE_CHECKING = False  # typing is for the type checker only: it costs every app's startup
if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import ModuleType

    from gossamer.tracehook.patching import Patch

SWITCH = "GOSSAMER_TRACE_PROPAGATION"
"""The environment variable that turns propagation off, as `off`."""

# os.path, not pathlib: this module is imported by every app at startup, and pathlib is not.
STARTUP_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "startup")  # noqa: PTH100, PTH118, PTH120
"""The folder holding the `sitecustomize` module that installs the hook."""

# Which module's import triggers which patch, named so that a patch's own module (and what it
# imports) loads only when the library it patches does.
PATCHES = {
    "http.server": "server.patch_http_server",
    "wsgiref.simple_server": "server.patch_wsgiref",
    "uvicorn.config": "server.patch_uvicorn",
    "http.client": "client.patch_http_client",
    "httpx._client": "client.patch_httpx",
    "aiohttp.client": "client.patch_aiohttp",
    "gossamer.events.subscription": "events.patch_subscription",
}


def enabled(environ: Mapping[str, str]) -> bool:
    """Whether propagation is on in this environment: unless $GOSSAMER_TRACE_PROPAGATION is off."""
    return environ.get(SWITCH, "").strip().lower() != "off"


class Installation:
    """The hook as installed in this process: its import finder and what it wrapped."""

    def __init__(self, patches: dict[str, Patch]) -> None:
        self.patcher = Patcher()
        self.finder = PatchOnImport(patches, self.patcher)

    def __repr__(self) -> str:
        return f"<Installation {self.finder!r} {self.patcher!r}>"

    def uninstall(self) -> None:
        """Stop patching imports and put every wrapped function back."""
        if self.finder in sys.meta_path:
            sys.meta_path.remove(self.finder)
        self.patcher.undo()


def install() -> Installation:
    """Patch what is imported already, and the rest as it is imported."""
    installation = Installation({name: _deferred(path) for name, path in PATCHES.items()})
    sys.meta_path.insert(0, installation.finder)
    installation.finder.patch_loaded()
    return installation


def _deferred(path: str) -> Patch:
    module_name, function = path.split(".")

    def patch(module: ModuleType, patcher: Patcher) -> None:
        patches = importlib.import_module(f"gossamer.tracehook.{module_name}")
        getattr(patches, function)(module, patcher)

    return patch


__all__ = ["PATCHES", "STARTUP_FOLDER", "SWITCH", "Installation", "enabled", "install"]
