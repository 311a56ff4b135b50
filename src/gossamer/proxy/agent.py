"""The proxy's side of the config stream: connect, apply updates, ACK or NACK, report readiness.

While the control plane is away the proxy keeps serving what it runs, and the agent reconnects
with jittered exponential backoff, trying each control-plane URL in turn (so that losing one
replica moves the proxy to another). An update that cannot be applied is NACKed with the reason
and the proxy keeps its last good snapshot.

With a mesh CA, the agent makes the workload's key, sends a CSR in its hello (or, when the
control plane answers that the workload is someone else, in a `Renew` at once, holding updates
until the certificate is here), and renews at half of the certificate's life. A renewed
certificate is used by new handshakes; connections already made keep theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import random
import shutil
import socket
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from gossamer.proxy.server import Proxy
from gossamer.proxy.span_export import ExportCredentials, origin
from gossamer.proxy.tap import ProxyTaps
from gossamer.security.files import write_file_atomically
from gossamer.security.spiffe import spiffe_id
from gossamer.security.trust import client_context, describe_failure, tls_failure
from gossamer.snapshot import SnapshotError
from gossamer.snapshot.protocol import (
    PATH,
    SUBPROTOCOL,
    Ack,
    Health,
    Hello,
    Issued,
    LeaseGrants,
    Reassembly,
    Renew,
    StaleBaseError,
    TapStart,
    TapStop,
    Update,
    Welcome,
    apply_update,
    decode_from_control_plane,
    encode,
)

log = logging.getLogger("gossamer.proxy.agent")


KEYGEN_TIMEOUT_S = 30.0
RENEW_RETRY_S = 10.0
"""How long a renewal waits for its answer before it asks again."""
RENEW_AT = 0.5
RENEW_JITTER = 0.05
"""A certificate is renewed when half (give or take 5%) of its life from issue is over, so
that the proxies of a mesh do not all ask at once."""


@dataclass(frozen=True, slots=True)
class Certificate:
    """The workload certificate in use: its files and validity (seconds since the epoch).

    `not_before` is back-dated for peers' clock skew, so the life that counts runs from
    `received` (when it arrived) to `not_after`; `renew_ratio` is the share of it to use.
    """

    spiffe: str
    cert_file: Path
    key_file: Path
    not_before: float
    not_after: float
    received: float = 0.0
    renew_ratio: float = RENEW_AT

    def renew_at(self) -> float:
        """Half way through its life: as much time again is left if renewing takes retries."""
        start = max(self.received, self.not_before)
        return start + (self.not_after - start) * self.renew_ratio

    def remove(self) -> None:
        """Delete its files (connections made with it keep what they loaded)."""
        self.cert_file.unlink(missing_ok=True)
        self.key_file.unlink(missing_ok=True)


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
    backoff_max_s: float = 2.0
    """A control plane back from a restart hears from every proxy within this (jittered)."""
    busy_backoff_max_s: float = 30.0
    """After a control plane took too long to answer: it is there but busy (a few thousand
    proxies joining at once), so the herd spreads out instead of coming back together."""
    ping_interval_s: float = 5.0
    ping_timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    """For the TCP connection: a host that is gone is given up on quickly (the next URL)."""
    open_timeout_s: float = 30.0
    """For TLS, the upgrade and the welcome, once connected: a busy control plane is waited
    for, since a handshake given up on is work it did for nothing."""
    service_account: str = "default"
    """The identity asked for in the first CSR; the control plane says if it is another."""
    trust_domain: str = "cluster.local"
    identity_dir: Path | None = None
    """Where the certificate and key are written for ssl to read (0700); None: a temp folder."""
    ca_file: Path | None = None
    """PEM roots to verify an https (wss) control plane with; None: the system's."""


class ControlPlaneBusyError(Exception):
    """The control plane took the connection but did not answer in time."""


async def dial(url: str, timeout_s: float) -> socket.socket:
    """A TCP connection to the host and port of `url`, within `timeout_s`."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout_s):
        family, kind, proto, _, address = (
            _literal(parts.hostname or "", port)
            or (await loop.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM))[0]
        )
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
    return sock


def _literal(host: str, port: int) -> tuple[int, int, int, str, tuple[str, int]] | None:
    """An address given as an IP needs no resolver (whose lookups run in a thread)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port)


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
        self.identity: Certificate | None = None
        """The certificate in use, once a CA signed one."""
        self.renewals = 0
        self._renewing: tuple[str, Path] | None = None
        """(SPIFFE id, key file) of a CSR sent and not answered yet."""
        self._serial = itertools.count(1)
        self._held: list[Update] = []
        self._identity_dir = options.identity_dir
        self._own_dir = False
        self._api_context: ssl.SSLContext | None = None
        self.unverified = ""
        """Why the last control plane tried could not be verified ("" once one was)."""
        self.taps = ProxyTaps(proxy.stats)
        proxy.on_apply.append(self._credit_exporter)

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
            if self._own_dir and self._identity_dir is not None:
                shutil.rmtree(self._identity_dir, ignore_errors=True)

    async def _connect_forever(self) -> None:
        failures = 0
        turn = 0
        while True:
            url = self.options.urls[turn % len(self.options.urls)]
            turn += 1
            busy = False
            try:
                if await self._session(url):
                    failures = 0
            except ControlPlaneBusyError as error:
                busy = True
                log.warning("control plane %s: %s", url, error)
            except InvalidStatus as error:
                status = error.response.status_code
                log.error("control plane %s refused the stream (HTTP %d)", url, status)
            except (OSError, TimeoutError, WebSocketException, SnapshotError) as error:
                failure = tls_failure(error)
                if failure is not None:
                    self._refuse(url, failure)
                else:
                    log.warning("control plane %s: %s", url, error or type(error).__name__)
            self.connected_to = None
            options = self.options
            cap = options.busy_backoff_max_s if busy else options.backoff_max_s
            delay = min(cap, options.backoff_initial_s * options.backoff_factor**failures)
            failures += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    def _refuse(self, url: str, failure: BaseException) -> None:
        """A server that did not prove it is the control plane: keep serving what runs."""
        self.unverified = describe_failure(failure, url, self.options.ca_file)
        self.proxy.stats.incr("gossamer_control_plane_unverified_total")
        log.error("control plane unverified: %s Serving the last good config.", self.unverified)

    async def _session(self, url: str) -> bool:
        """One connection; True when it got as far as a welcome (reset the backoff)."""
        options = self.options
        current = self.proxy.snapshot.version if self.proxy.snapshot else ""
        sock = await dial(url, options.connect_timeout_s)
        try:
            async with asyncio.timeout(options.open_timeout_s):
                websocket = await self._open(url, sock)
        except TimeoutError:
            sock.close()
            raise ControlPlaneBusyError(
                f"connected, but no TLS handshake and upgrade within {options.open_timeout_s:g}s"
            ) from None
        except BaseException:
            sock.close()
            raise
        async with websocket:
            return await self._stream(url, websocket, current)

    async def _open(self, url: str, sock: socket.socket) -> ClientConnection:
        options = self.options
        return await connect(
            stream_url(url, options.hello),
            sock=sock,
            additional_headers={"Authorization": f"Bearer {options.token}"},
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            ping_interval=options.ping_interval_s,
            ping_timeout=options.ping_timeout_s,
            open_timeout=None,  # the caller's deadline covers it
            max_size=64 * 1024 * 1024,
            compression=None,
            **self._tls(url),
        )

    async def _stream(self, url: str, websocket: ClientConnection, current: str) -> bool:
        """Hello, welcome, then updates until the stream ends."""
        options = self.options
        identity = self.identity
        hello = msgspec.structs.replace(
            options.hello,
            version=current,
            csr=await self._hello_csr(),
            ready=self._is_ready(),
            identity=identity.spiffe if identity is not None else "",
            certificate_expiry=identity.not_after if identity is not None else 0.0,
            taps=True,
        )
        await websocket.send(encode(hello))
        try:
            answer = await asyncio.wait_for(websocket.recv(), options.open_timeout_s)
        except TimeoutError:
            raise ControlPlaneBusyError(
                f"no welcome within {options.open_timeout_s:g}s of the hello"
            ) from None
        welcome = decode_from_control_plane(answer)
        if not isinstance(welcome, Welcome):
            raise SnapshotError("the control plane did not answer with a welcome")
        self.connected_to, self.proxy_id = url, welcome.proxy
        self.unverified = ""
        log.info("connected to %s (%s) as %s", url, welcome.control_plane, welcome.proxy)
        await self._welcomed(websocket, welcome)
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(self._report(websocket)),
            loop.create_task(self._renew(websocket)),
            loop.create_task(self.taps.run(lambda events: websocket.send(encode(events)))),
        ]
        if options.hello.role == "gateway":
            leases = self.proxy.budgets.run(lambda batch: websocket.send(encode(batch)))
            tasks.append(loop.create_task(leases))
        reassembly = Reassembly()
        try:
            async for piece in websocket:
                data = reassembly.feed(piece)
                if data is None:
                    continue
                message = decode_from_control_plane(data)
                if isinstance(message, Update):
                    if self._renewing is not None and self.identity is None:
                        self._held.append(message)  # applied once the certificate is here
                        continue
                    await websocket.send(encode(await self._apply(message)))
                elif isinstance(message, Issued):
                    await self._issued(websocket, message)
                elif isinstance(message, TapStart):
                    self.taps.start(message)
                elif isinstance(message, TapStop):
                    self.taps.stop(message.id)
                elif isinstance(message, LeaseGrants):
                    self.proxy.budgets.answer(message)
        finally:
            self._forget_renewal()
            self._held.clear()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return True

    def _credit_exporter(self, snapshot: object) -> None:
        """Let the span exporter show this proxy's token to its control planes (and only to
        them), verifying them as the stream does: `gossamer up` points tracing at the control
        plane's built-in receiver."""
        exporter = self.proxy.exporter
        if exporter is None or exporter.credentials is not None:
            return
        urls = self.options.urls
        context = self._tls(urls[0]).get("ssl") if urls[0].startswith("https://") else None
        origins = tuple(origin(url) for url in urls)
        exporter.credentials = ExportCredentials(origins, self.options.token, context)

    def _tls(self, url: str) -> dict[str, Any]:
        """The context that verifies an https control plane (with the mesh CA's roots)."""
        if not url.startswith("https://"):
            return {}
        if self._api_context is None:
            self._api_context = client_context(self.options.ca_file)
        return {"ssl": self._api_context}

    # -- identity --------------------------------------------------------------------------

    async def _hello_csr(self) -> str:
        """A CSR for the hello when there is no certificate yet or it is due for renewal."""
        self._forget_renewal()  # a key made for a session that never got an answer
        if self.identity is not None and time.time() < self.identity.renew_at():
            return ""
        options = self.options
        wanted = (
            self.identity.spiffe
            if self.identity is not None
            else spiffe_id(options.trust_domain, options.hello.namespace, options.service_account)
        )
        return await self._new_key(wanted)

    async def _new_key(self, spiffe: str) -> str:
        """Make a key (in a process of its own: see security/keygen.py) and return its CSR."""
        key = self._folder() / f"key-{next(self._serial)}.pem"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gossamer.security.keygen",
            "--spiffe",
            spiffe,
            "--key",
            str(key),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), KEYGEN_TIMEOUT_S)
        if process.returncode != 0:
            raise SnapshotError(f"making the workload key failed: {err.decode()[-300:]}")
        self._renewing = (spiffe, key)
        return out.decode("ascii")

    async def _welcomed(self, websocket: ClientConnection, welcome: Welcome) -> None:
        if welcome.certificate:
            issued = Issued(welcome.certificate, "", welcome.not_before, welcome.not_after)
            await self._issued(websocket, issued)
            return
        if not welcome.identity:
            if welcome.certificate_error:
                log.error("no workload certificate: %s", welcome.certificate_error)
            self._forget_renewal()
            return
        current = self.identity.spiffe if self.identity is not None else ""
        if current == welcome.identity and time.time() < self.identity_renew_at():
            self._forget_renewal()
            return
        # The control plane knows the workload's service account better: ask for that one.
        self._forget_renewal()
        await websocket.send(encode(Renew(await self._new_key(welcome.identity))))

    def identity_renew_at(self) -> float:
        """When the certificate in use is due for renewal (0 without one)."""
        return self.identity.renew_at() if self.identity is not None else 0.0

    async def _issued(self, websocket: ClientConnection, issued: Issued) -> None:
        renewing, self._renewing = self._renewing, None
        if issued.error or renewing is None:
            log.error("the control plane did not sign a certificate: %s", issued.error or "unasked")
            if renewing is not None:
                renewing[1].unlink(missing_ok=True)
        else:
            spiffe, key = renewing
            cert = key.with_name(key.name.replace("key-", "cert-", 1))
            try:
                write_file_atomically(cert, issued.certificate.encode("ascii"), 0o644)
                # Loading the pair checks that the certificate is for this key.
                self.proxy.set_identity(str(cert), str(key), spiffe)
            except (ValueError, OSError, SnapshotError) as problem:
                log.error("cannot use the signed certificate: %s", problem)
            else:
                previous, self.identity = (
                    self.identity,
                    Certificate(
                        spiffe,
                        cert,
                        key,
                        issued.not_before,
                        issued.not_after,
                        received=time.time(),
                        renew_ratio=RENEW_AT + random.uniform(-RENEW_JITTER, RENEW_JITTER),
                    ),
                )
                if previous is not None:
                    previous.remove()
                self.renewals += 1
                self.proxy.stats.incr("gossamer_certificates_issued_total")
                self.proxy.stats.gauges["gossamer_certificate_expiry_timestamp_seconds"] = (
                    issued.not_after
                )
                log.info("certificate for %s until %s", spiffe, time.ctime(issued.not_after))
        held, self._held = self._held, []
        for update in held:
            await websocket.send(encode(await self._apply(update)))

    def _forget_renewal(self) -> None:
        if self._renewing is not None:
            self._renewing[1].unlink(missing_ok=True)
            self._renewing = None

    async def _renew(self, websocket: ClientConnection) -> None:
        """At half of the certificate's life, ask for a new one (with a new key)."""
        while True:
            identity = self.identity
            wait = identity.renew_at() - time.time() if identity is not None else 1.0
            await asyncio.sleep(max(0.05, min(wait, 3600.0)))
            identity = self.identity
            if identity is None or self._renewing is not None or time.time() < identity.renew_at():
                continue
            try:
                await websocket.send(encode(Renew(await self._new_key(identity.spiffe))))
            except (SnapshotError, OSError, TimeoutError) as error:
                log.error("cannot renew the workload certificate: %s", error)
            # An answer that never comes (or a key that could not be made) is tried again.
            await asyncio.sleep(RENEW_RETRY_S)
            self._forget_renewal()

    def _folder(self) -> Path:
        if self._identity_dir is None:
            self._identity_dir = Path(tempfile.mkdtemp(prefix="gossamer-identity-"))
            self._own_dir = True
        return self._identity_dir

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
