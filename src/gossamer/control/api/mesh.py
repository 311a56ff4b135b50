"""The mesh routes: proxies' config streams, their status, and workload tokens.

`GET /mesh/v1/stream?namespace=NS&workload=NAME` upgrades to a WebSocket carrying the messages
of `gossamer.snapshot.protocol`. The bearer token must be the admin's or that workload's; the
check happens before the upgrade, so a refused proxy gets a plain 401 or 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Any

from cryptography import x509
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from gossamer.control.api.guard import BearerAuthentication, authorize
from gossamer.control.api.status import ApiError
from gossamer.control.auth import (
    MESH_GROUP,
    STREAMS,
    Access,
    TokenRegistry,
    Verb,
    workload_principal,
)
from gossamer.control.mesh.distributor import ProxyStream
from gossamer.control.mesh.registry import Registration
from gossamer.control.mesh.service import WORKLOAD_TOKENS, Mesh, new_workload_token
from gossamer.control.store import ObjectKey
from gossamer.control.telemetry.taps import TapHub
from gossamer.snapshot import SnapshotError
from gossamer.snapshot.protocol import (
    SUBPROTOCOL,
    Ack,
    Health,
    Hello,
    Issued,
    LeaseRequest,
    Renew,
    TapEvents,
    Welcome,
    decode_from_proxy,
    encode,
    pieces,
)

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 10.0
_NAME_LIMIT = 63
FIRST_UPDATES_IN_FLIGHT = 32
"""First (whole) updates sent and not yet answered, across proxies. After a restart every
proxy wants the whole mesh at once (a quarter of a megabyte each, compressed, for 5,000
services): taken in turn, each gets it quickly, and the buffers of the ones waiting hold
nothing."""
FIRST_UPDATE_ANSWER_S = 10.0
"""How long a first update holds its turn without an answer."""


class MeshEndpoints:
    """Handlers of the mesh routes of one replica."""

    def __init__(self, mesh: Mesh, tokens: TokenRegistry, taps: TapHub | None = None) -> None:
        self.mesh = mesh
        self.tokens = tokens
        self.taps = taps or TapHub()
        self._guard = BearerAuthentication(_refuse, tokens)
        self._streams: set[asyncio.Task[None]] = set()
        self._first_updates = asyncio.Semaphore(FIRST_UPDATES_IN_FLIGHT)

    async def stream(self, websocket: WebSocket) -> None:
        """One proxy's config stream, until either side closes it."""
        namespace = websocket.query_params.get("namespace", "default")
        workload = websocket.query_params.get("workload", "")
        try:
            self._authorize_stream(websocket, namespace, workload)
        except ApiError as error:
            await websocket.send_denial_response(error.response())
            return
        protocols = websocket.scope.get("subprotocols") or []
        await websocket.accept(SUBPROTOCOL if SUBPROTOCOL in protocols else None)
        hello = await self._hello(websocket, namespace, workload)
        if hello is None:
            return
        distributor = self.mesh.distributor
        stream = distributor.connect(hello)
        if hello.identity and hello.certificate_expiry:
            stream.identity, stream.certificate_expiry = hello.identity, hello.certificate_expiry
        issued = self._sign(stream, hello.csr) if hello.csr else Issued()
        welcome = Welcome(
            stream.id,
            self.mesh.replica,
            issued.certificate,
            issued.error,
            self.mesh.identity(hello.namespace, stream.service_account),
            issued.not_before,
            issued.not_after,
        )
        await websocket.send_bytes(encode(welcome))
        # The first update does not wait for the registration's write to the store.
        writer = asyncio.get_running_loop().create_task(self._write(websocket, stream))
        entry: ObjectKey | None = None
        if hello.taps:
            self.taps.attach(stream.id, websocket.send_bytes)
        try:
            entry = await self._register(stream)
            await self._read(websocket, stream, entry)
        finally:
            self.taps.detach(stream.id)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            distributor.disconnect(stream)
            if entry is not None:
                await self.mesh.registry.disconnected(entry)

    def _authorize_stream(self, websocket: WebSocket, namespace: str, workload: str) -> None:
        principal = self._guard.authenticate(websocket.headers.get("authorization"))
        if not workload:
            raise ApiError(400, "BadRequest", "the stream needs ?workload=NAME (&namespace=NS)")
        access = Access(Verb.WATCH, MESH_GROUP, STREAMS, namespace, workload)
        if not principal.allows(access):
            raise ApiError(
                403,
                "Forbidden",
                f"{principal.name} cannot open the config stream of {namespace}/{workload}",
            )

    async def _hello(self, websocket: WebSocket, namespace: str, workload: str) -> Hello | None:
        try:
            data = await asyncio.wait_for(websocket.receive_bytes(), HELLO_TIMEOUT_S)
            hello = decode_from_proxy(data)
        except (TimeoutError, SnapshotError, KeyError, WebSocketDisconnect) as error:
            log.info("a proxy stream ended before its hello: %s", error or type(error).__name__)
            with contextlib.suppress(Exception):
                await websocket.close(1008, "expected a hello message first")
            return None
        if not isinstance(hello, Hello) or (hello.namespace, hello.workload) != (
            namespace,
            workload,
        ):
            await websocket.close(1008, "the hello must name the workload of the stream's URL")
            return None
        return hello

    async def _register(self, stream: ProxyStream) -> ObjectKey | None:
        instance = stream.hello.instance
        if instance is None:
            return None
        registration = Registration(
            workload=stream.hello.workload,
            namespace=stream.hello.namespace,
            instance=instance,
            labels=stream.labels,
            service_account=stream.service_account,
        )
        # Not ready until the proxy says so: traffic waits for the sidecar's first snapshot. A
        # proxy that reconnects while serving says so in its hello, and keeps its traffic.
        return await self.mesh.registry.register(registration, ready=stream.hello.ready)

    async def _write(self, websocket: WebSocket, stream: ProxyStream) -> None:
        async with self._first_updates:
            await stream.wake.wait()
            stream.wake.clear()
            first = self.mesh.distributor.compose(stream)
            if first is not None:
                await _send(websocket, first)
                del first  # not kept while waiting for the answer
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stream.answered.wait(), FIRST_UPDATE_ANSWER_S)
        while True:
            await stream.wake.wait()
            stream.wake.clear()
            message = self.mesh.distributor.compose(stream)
            if message is not None:
                await _send(websocket, message)

    async def _read(
        self, websocket: WebSocket, stream: ProxyStream, entry: ObjectKey | None
    ) -> None:
        while True:
            try:
                data = await websocket.receive_bytes()
            except (WebSocketDisconnect, KeyError):
                return
            try:
                message = decode_from_proxy(data)
            except SnapshotError as error:
                log.warning("proxy %s sent garbage (%s): closing its stream", stream.id, error)
                await websocket.close(1003, "not a proxy message")
                return
            if isinstance(message, Ack):
                self.mesh.distributor.acknowledge(stream, message, resync=message.resync)
            elif isinstance(message, Health) and entry is not None:
                await self.mesh.registry.set_health(entry, message.ready, message.message)
            elif isinstance(message, Renew):
                await websocket.send_bytes(encode(self._sign(stream, message.csr)))
            elif isinstance(message, TapEvents):
                self.taps.receive(stream.id, message)
            elif isinstance(message, LeaseRequest) and stream.role == "gateway":
                grants = await self.mesh.leases.grant(message, stream.id)
                await websocket.send_bytes(encode(grants))

    def _sign(self, stream: ProxyStream, csr: str) -> Issued:
        """Sign a CSR for the identity of the stream's workload (its service account)."""
        hello = stream.hello
        certificate, error = self.mesh.sign(csr, hello.namespace, stream.service_account)
        if error:
            log.warning("refused a certificate to %s: %s", stream.id, error)
            return Issued(error=error)
        leaf = x509.load_pem_x509_certificate(certificate.encode())
        stream.identity = self.mesh.identity(hello.namespace, stream.service_account)
        stream.certificate_expiry = leaf.not_valid_after_utc.timestamp()
        return Issued(
            certificate,
            not_before=leaf.not_valid_before_utc.timestamp(),
            not_after=stream.certificate_expiry,
        )

    async def proxies(self, request: Request) -> Response:
        """Every connected proxy of the mesh: this replica's now, the others' as last reported."""
        authorize(request, Access(Verb.LIST, MESH_GROUP, "proxies"))
        items = _once_each([*self.mesh.distributor.status(), *self.mesh.lease_proxies()])
        items.sort(key=lambda item: (str(item["namespace"]), str(item["workload"])))
        return JSONResponse({"kind": "ProxyStatusList", "items": items})

    async def mint(self, request: Request) -> Response:
        """A new token for one workload: it can open that workload's stream, nothing else."""
        namespace = request.path_params["namespace"]
        authorize(request, Access(Verb.CREATE, MESH_GROUP, WORKLOAD_TOKENS.plural, namespace))
        try:
            body = await request.json()
        except ValueError:
            body = None
        workload = body.get("workload") if isinstance(body, dict) else None
        if not isinstance(workload, str) or not workload or len(workload) > _NAME_LIMIT:
            raise ApiError(422, "Invalid", 'the body must be {"workload": NAME}')
        token, key, record = new_workload_token(namespace, workload)
        stored = await self.mesh.mirror.store.create(key, record)
        digest = hashlib.sha256(token.encode()).digest()
        self.tokens.add_workload(digest, workload_principal(namespace, workload))
        return JSONResponse(
            {"name": key.name, "namespace": namespace, "workload": workload, "token": token},
            status_code=201,
            headers={"x-resource-version": str(stored.version)},
        )


async def _send(websocket: WebSocket, message: bytes) -> None:
    """Send in pieces when large; each waits until the connection takes more (see pieces)."""
    for piece in pieces(message):
        await websocket.send_bytes(piece)


def _once_each(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per proxy: a proxy that moved here is still in its old replica's last lease
    until that lapses; the first listing (this replica's own) wins."""
    seen: set[str] = set()
    kept = []
    for item in items:
        # A proxy names itself (host, pid); one that did not cannot be told apart: keep all.
        name = str(item.get("name") or item["proxy"])
        if name not in seen:
            seen.add(name)
            kept.append(item)
    return kept


async def _refuse(*args: object) -> None:
    raise AssertionError("the guard is used only to authenticate")
