"""The proxy's side of the config stream: connect, apply updates, ACK or NACK, report readiness.

While the control plane is away the proxy keeps serving what it runs, and the agent reconnects
with jittered exponential backoff, trying each control-plane URL in turn (so that losing one
replica moves the proxy to another). An update that cannot be applied is NACKed with the reason
and the proxy keeps its last good snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from gossamer.proxy.server import Proxy
from gossamer.snapshot import SnapshotError
from gossamer.snapshot.protocol import (
    PATH,
    SUBPROTOCOL,
    Ack,
    Health,
    Hello,
    StaleBaseError,
    Update,
    Welcome,
    apply_update,
    decode_from_control_plane,
    encode,
)

log = logging.getLogger("gossamer.proxy.agent")


@dataclass(frozen=True, slots=True)
class AgentOptions:
    """Where the control plane is, who this proxy is, and how patiently to reconnect."""

    urls: tuple[str, ...]
    token: str
    hello: Hello
    ready_url: str | None = None
    """The app's readiness endpoint (HTTP GET, 2xx or 3xx is ready); None: ready once configured."""
    probe_interval_s: float = 1.0
    backoff_initial_s: float = 0.1
    backoff_factor: float = 1.6
    backoff_max_s: float = 10.0
    ping_interval_s: float = 5.0
    ping_timeout_s: float = 10.0
    open_timeout_s: float = 5.0


def stream_url(base: str, hello: Hello) -> str:
    """The WebSocket URL of a workload's config stream on a control plane at `base`."""
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    query = urlencode({"namespace": hello.namespace, "workload": hello.workload})
    return f"{scheme}://{parts.netloc}{PATH}?{query}"


class ControlPlaneAgent:
    """Keeps one proxy connected to a control plane and running what it is sent."""

    def __init__(self, proxy: Proxy, options: AgentOptions) -> None:
        assert options.urls, "at least one control-plane URL"
        self.proxy = proxy
        self.options = options
        self.configured = asyncio.Event()
        """Set once the first snapshot from a control plane runs."""
        self.connected_to: str | None = None
        self.proxy_id = ""
        self.ready = False
        self.rejected = 0
        self._ready_changed = asyncio.Event()

    def __repr__(self) -> str:
        where = self.connected_to or "disconnected"
        version = self.proxy.snapshot.version if self.proxy.snapshot else "none"
        return f"<ControlPlaneAgent {where} running {version} ready={self.ready}>"

    async def run(self) -> None:
        """Stay connected until cancelled."""
        probe = asyncio.get_running_loop().create_task(self._probe())
        try:
            await self._connect_forever()
        finally:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe

    async def _connect_forever(self) -> None:
        failures = 0
        turn = 0
        while True:
            url = self.options.urls[turn % len(self.options.urls)]
            turn += 1
            try:
                if await self._session(url):
                    failures = 0
            except InvalidStatus as error:
                status = error.response.status_code
                log.error("control plane %s refused the stream (HTTP %d)", url, status)
            except (OSError, TimeoutError, WebSocketException, SnapshotError) as error:
                log.warning("control plane %s: %s", url, error or type(error).__name__)
            self.connected_to = None
            options = self.options
            delay = min(
                options.backoff_max_s, options.backoff_initial_s * options.backoff_factor**failures
            )
            failures += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _session(self, url: str) -> bool:
        """One connection; True when it got as far as a welcome (reset the backoff)."""
        options = self.options
        current = self.proxy.snapshot.version if self.proxy.snapshot else ""
        async with connect(
            stream_url(url, options.hello),
            additional_headers={"Authorization": f"Bearer {options.token}"},
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            ping_interval=options.ping_interval_s,
            ping_timeout=options.ping_timeout_s,
            open_timeout=options.open_timeout_s,
            max_size=64 * 1024 * 1024,
            compression=None,
        ) as websocket:
            await websocket.send(encode(msgspec.structs.replace(options.hello, version=current)))
            welcome = decode_from_control_plane(
                await asyncio.wait_for(websocket.recv(), options.open_timeout_s)
            )
            if not isinstance(welcome, Welcome):
                raise SnapshotError("the control plane did not answer with a welcome")
            self.connected_to, self.proxy_id = url, welcome.proxy
            log.info("connected to %s (%s) as %s", url, welcome.control_plane, welcome.proxy)
            reporter = asyncio.get_running_loop().create_task(self._report(websocket))
            try:
                async for data in websocket:
                    message = decode_from_control_plane(data)
                    if isinstance(message, Update):
                        await websocket.send(encode(await self._apply(message)))
            finally:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
        return True

    async def _apply(self, update: Update) -> Ack:
        try:
            snapshot = apply_update(self.proxy.snapshot, update)
            await self.proxy.apply(snapshot)
        except StaleBaseError as error:
            return Ack(update.version, str(error), resync=True)
        except (SnapshotError, OSError) as error:
            self.rejected += 1
            self.proxy.stats.incr("gossamer_snapshot_rejected_total")
            running = self.proxy.snapshot.version if self.proxy.snapshot else "none"
            log.error("rejected update %s, still running %s: %s", update.version, running, error)
            return Ack(update.version, f"{type(error).__name__}: {error}")
        if not self.configured.is_set():
            self.configured.set()
            self._ready_changed.set()
        log.info("running %s", snapshot.version)
        return Ack(update.version)

    async def _report(self, websocket: ClientConnection) -> None:
        """Send readiness now and whenever it changes."""
        while True:
            await websocket.send(encode(Health(self._is_ready())))
            self._ready_changed.clear()
            await self._ready_changed.wait()

    def _is_ready(self) -> bool:
        return self.configured.is_set() and self.ready

    async def _probe(self) -> None:
        while True:
            ready = await self._probe_once() if self.options.ready_url else True
            if ready != self.ready:
                self.ready = ready
                self._ready_changed.set()
            await asyncio.sleep(self.options.probe_interval_s)

    async def _probe_once(self) -> bool:
        assert self.options.ready_url is not None
        return await http_ok(self.options.ready_url, timeout_s=self.options.probe_interval_s)


async def http_ok(url: str, timeout_s: float) -> bool:
    """Whether GET `url` answers 2xx or 3xx within the timeout (a readiness probe)."""
    status = await http_status(url, timeout_s)
    return status is not None and 200 <= status < 400


async def http_status(url: str, timeout_s: float) -> int | None:
    """The status GET `url` answers with, or None when nothing answers within the timeout.

    A bare HTTP/1.1 exchange on a fresh connection: probes run often, and a full HTTP client
    (with its TLS context) costs more than the check itself.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                request = (
                    f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
                )
                writer.write(request.encode("latin-1"))
                status_line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None
    fields = status_line.split()
    return int(fields[1]) if len(fields) >= 2 and fields[1].isdigit() else None
