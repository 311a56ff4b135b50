"""`gossamer control-plane`: the store and the API on uvicorn, started and stopped in a fixed order.

Start: open the store, load (or create) the admin token, bind the socket, serve. Stop: uvicorn
stops accepting and closes connections (open watches get `graceful_s` to end), then the store
closes. Everything a run needs is in `ControlPlaneConfig`; nothing lives at module level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import uvicorn

from gossamer.control.api.app import create_app
from gossamer.control.api.catalog import Catalog
from gossamer.control.api.dashboard import DashboardEndpoints
from gossamer.control.api.mesh import MeshEndpoints
from gossamer.control.api.resources import ApiSettings, ResourceEndpoints
from gossamer.control.api.telemetry import TelemetryEndpoints
from gossamer.control.auth import (
    ADMIN,
    PROMETHEUS,
    TokenRegistry,
    load_admin_token,
    load_prometheus_token,
)
from gossamer.control.mesh.service import Mesh, MeshSettings
from gossamer.control.store.location import (
    SqliteLocation,
    StoreLocation,
    open_store,
    parse_location,
)
from gossamer.control.store.model import Store, StoreSettings
from gossamer.control.telemetry.service import Telemetry, TelemetrySettings
from gossamer.control.telemetry.wiring import mesh_inventory, scrape_targets
from gossamer.listen import Listen
from gossamer.security.ca import CertificateAuthority
from gossamer.security.files import make_private_directory, write_file_atomically
from gossamer.security.trust import TRUST_BUNDLE, control_plane_spiffe_id

DEFAULT_LISTEN = "127.0.0.1:15010"
DEFAULT_STATE = Path(".gossamer/control-plane")
STORE_FILE = "store.db"
CA_DIR = "ca"
API_TLS_DIR = "api-tls"
"""The mesh CA's folder in the state folder (Istio's plug-in layout: ca-cert.pem, ca-key.pem,
root-cert.pem, cert-chain.pem); an operator's own intermediate can be put there before start."""


@dataclass(frozen=True, slots=True)
class ControlPlaneConfig:
    """Everything one control plane run needs."""

    state_dir: Path = DEFAULT_STATE
    store: StoreLocation | None = None
    """None: sqlite in `state_dir`."""
    listen: Listen = field(default_factory=lambda: Listen.parse(DEFAULT_LISTEN))
    api: ApiSettings = field(default_factory=ApiSettings)
    store_settings: StoreSettings = field(default_factory=StoreSettings)
    mesh: MeshSettings = field(default_factory=MeshSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    graceful_s: float = 5.0
    start_timeout_s: float = 30.0
    tls: bool = True
    """Serve the API over HTTPS with a certificate from the mesh CA (clients verify it with
    `STATE/ca/trust-bundle.pem`); False only for development: plain HTTP lets whoever holds
    the port collect every token clients send."""
    server_names: tuple[str, ...] = ()
    """More DNS names or addresses the API certificate is valid for (remote clients)."""

    @property
    def store_location(self) -> StoreLocation:
        """Where the store is."""
        return self.store or SqliteLocation(self.state_dir / STORE_FILE)

    @classmethod
    def from_options(
        cls,
        state_dir: Path,
        store: str | None,
        listen: str,
        *,
        tls: bool = True,
        server_names: tuple[str, ...] = (),
    ) -> ControlPlaneConfig:
        """From command-line text; ValueError says which part is wrong."""
        location = parse_location(store) if store else None
        return cls(
            state_dir=state_dir,
            store=location,
            listen=Listen.parse(listen),
            tls=tls,
            server_names=server_names,
        )


class _DenialIsNotAnError(logging.Filter):
    """uvicorn's sans-IO WebSocket protocol logs a refused upgrade (our 401/403 answer, sent
    with the ASGI denial-response extension) as an app that never completed its handshake."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing handshake" not in record.getMessage()


_DENIAL_FILTER = _DenialIsNotAnError()


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handlers: `serve` stops it, then closes the store."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ControlPlane:
    """A running control plane; `async with` starts and stops it."""

    def __init__(self, config: ControlPlaneConfig) -> None:
        self.config = config
        self.url = ""
        self.store: Store | None = None
        self.tokens = TokenRegistry()
        self.endpoints: ResourceEndpoints | None = None
        self.mesh: Mesh | None = None
        self.telemetry: Telemetry | None = None
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    def __repr__(self) -> str:
        return f"<ControlPlane {self.url or 'not started'} store={self.config.store_location}>"

    @property
    def token_file(self) -> Path:
        """Where the admin token is."""
        return self.config.state_dir / "admin-token"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> str:
        """Open the store, then accept connections; returns the URL."""
        self.tokens.add(load_admin_token(self.config.state_dir), ADMIN)
        self.tokens.add(load_prometheus_token(self.config.state_dir), PROMETHEUS)
        self.store = await open_store(self.config.store_location, self.config.store_settings)
        try:
            await self._serve_http(self.store)
        except BaseException:
            await self.stop()
            raise
        return self.url

    async def _serve_http(self, store: Store) -> None:
        logging.getLogger("uvicorn.error").addFilter(_DENIAL_FILTER)
        self._sock = self.config.listen.bind()
        host, port = self._sock.getsockname()[:2]
        scheme = "https" if self.config.tls else "http"
        self.url = f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
        catalog = Catalog()
        self.endpoints = ResourceEndpoints(store, catalog, self.config.api)
        settings = self.config.mesh
        ca = (
            CertificateAuthority.load_or_create(
                self.config.state_dir / CA_DIR, lifetime_s=settings.certificate_lifetime_s
            )
            if settings.mtls or self.config.tls
            else None
        )
        tls_files = self._api_certificate(ca, host) if ca is not None and self.config.tls else None
        mesh_ca = ca if settings.mtls else None
        self.mesh = Mesh(store, catalog, self.tokens, settings, url=self.url, ca=mesh_ca)
        await self.mesh.start()
        mesh = self.mesh
        self.telemetry = Telemetry(
            self.config.telemetry, scrape_targets(mesh), lambda: mesh_inventory(mesh)
        )
        self.telemetry.start()
        app = create_app(
            self.endpoints,
            self.tokens,
            MeshEndpoints(self.mesh, self.tokens, self.telemetry.taps),
            TelemetryEndpoints(self.telemetry),
            DashboardEndpoints(self.tokens, catalog),
        )
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=int(max(1, self.config.graceful_s)),
            ws="websockets-sansio",
            # The stream's pings are the proxies' heartbeat: a silent peer is gone within 15 s.
            ws_ping_interval=5.0,
            ws_ping_timeout=10.0,
            ws_max_size=64 * 1024 * 1024,
            ssl_certfile=str(tls_files[0]) if tls_files else None,
            ssl_keyfile=str(tls_files[1]) if tls_files else None,
        )
        self._server = _Uvicorn(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        await self._wait_started(self._server, self._task)

    def _api_certificate(self, ca: CertificateAuthority, host: str) -> tuple[Path, Path]:
        """A fresh server certificate for the API, from the mesh CA, for the listen address,
        localhost, this host's name and the configured names, with the control plane's SPIFFE
        id; written next to the CA (the key 0600)."""
        names = [host, "localhost", "127.0.0.1", socket.gethostname(), *self.config.server_names]
        if host in ("0.0.0.0", "::"):
            names = names[1:]
        chain, key = ca.issue_server_certificate(
            list(dict.fromkeys(names)), uris=[control_plane_spiffe_id(ca.trust_domain)]
        )
        folder = self.config.state_dir / API_TLS_DIR
        make_private_directory(folder)
        write_file_atomically(folder / "tls.key", key.encode(), 0o600)
        write_file_atomically(folder / "tls.crt", chain.encode(), 0o644)
        return folder / "tls.crt", folder / "tls.key"

    @property
    def ca_file(self) -> Path:
        """The roots clients verify the API (and the mesh's certificates) with."""
        return self.config.state_dir / CA_DIR / TRUST_BUNDLE

    async def _wait_started(self, server: _Uvicorn, task: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.start_timeout_s
        while not server.started:
            if task.done():
                raise RuntimeError("the HTTP server stopped while starting")
            if loop.time() > deadline:
                raise TimeoutError(
                    f"the HTTP server did not start in {self.config.start_timeout_s}s"
                )
            await asyncio.sleep(0.01)

    async def run_until(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set (or the server fails); `stop()` comes after."""
        assert self._task is not None, "not started"
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({stopping, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()

    async def stop(self) -> None:
        """Stop accepting, end connections within the grace period, then close the store."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            if self.endpoints is not None:
                # Watches never finish by themselves: end them so that shutdown need not wait.
                await self.endpoints.end_watches()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), self.config.graceful_s + 10)
        self._server = self._task = None
        if self.telemetry is not None:
            telemetry, self.telemetry = self.telemetry, None
            await telemetry.close()
        if self.mesh is not None:
            mesh, self.mesh = self.mesh, None
            await mesh.close()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.store is not None:
            store, self.store = self.store, None
            await store.close()


async def serve(config: ControlPlaneConfig, on_ready: Callable[[ControlPlane], None]) -> None:
    """Run until SIGINT or SIGTERM; `on_ready` is called once requests are accepted."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    async with ControlPlane(config) as plane:
        on_ready(plane)
        await plane.run_until(stop)


def configure_logging(level: int = logging.INFO) -> None:
    """One line per message on stderr."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
