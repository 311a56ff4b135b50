"""Mesh mTLS between two real proxies: a client sidecar originates, a server sidecar terminates.

Certificates come from a real mesh CA on disk; every handshake is real TLS 1.3 over loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from gossamer.proxy import AdminServer, Proxy
from gossamer.security.ca import CertificateAuthority
from gossamer.security.identity import WorkloadIdentity
from gossamer.security.spiffe import client_context, spiffe_id
from gossamer.snapshot import (
    Cluster,
    Endpoint,
    InboundMtls,
    Listener,
    Node,
    Route,
    RouteTable,
    Security,
    Snapshot,
    SnapshotError,
    VirtualHost,
    WeightedCluster,
)

from .backend import Backend
from .raw_upstream import serving
from .waiting import LoopErrors, eventually, idle
from .websocket import read_head

FRONTEND = spiffe_id("cluster.local", "default", "frontend")
GREETER = spiffe_id("cluster.local", "default", "greeter")


def issue(ca: CertificateAuthority, spiffe: str, folder: Path) -> tuple[str, str]:
    """A workload's key and certificate from the CA, written where a proxy reads them."""
    identity = WorkloadIdentity.create(spiffe)
    namespace, account = spiffe.split("/ns/")[1].split("/sa/")
    identity.accept(ca.sign(identity.csr(), namespace=namespace, service_account=account))
    cert, key = identity.write(folder)
    return str(cert), str(key)


def server_snapshot(backend_port: int, mtls: InboundMtls, roots: tuple[str, ...]) -> Snapshot:
    app = Cluster(
        name="inbound|8080||", endpoints=(Endpoint(address="127.0.0.1", port=backend_port),)
    )
    table = RouteTable(
        name="inbound",
        virtual_hosts=(
            VirtualHost(
                name="inbound",
                domains=("*",),
                routes=(Route(name="app", clusters=(WeightedCluster(cluster=app.name),)),),
            ),
        ),
    )
    return Snapshot(
        version="1",
        node=Node(workload="greeter", service_account="greeter", service="greeter"),
        listeners=(Listener("inbound", "127.0.0.1", 0, "inbound", "inbound", mtls=mtls),),
        route_tables=(table,),
        clusters=(app,),
        security=Security(roots=roots),
    )


def client_snapshot(port: int, identity: str, roots: tuple[str, ...]) -> Snapshot:
    greeter = Cluster(
        name="outbound|80||greeter.default.svc.cluster.local",
        endpoints=(Endpoint(address="127.0.0.1", port=port, identity=identity),),
    )
    table = RouteTable(
        name="outbound",
        virtual_hosts=(
            VirtualHost(
                name="greeter",
                domains=("*",),
                routes=(Route(name="greeter", clusters=(WeightedCluster(cluster=greeter.name),)),),
            ),
        ),
    )
    return Snapshot(
        version="1",
        node=Node(
            workload="frontend", service_account="frontend", service="frontend", version="v2"
        ),
        listeners=(Listener("outbound", "127.0.0.1", 0, "outbound", "outbound"),),
        route_tables=(table,),
        clusters=(greeter,),
        security=Security(roots=roots),
    )


Start = Callable[..., Awaitable[Proxy]]


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "ca")


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    proxies: list[Proxy] = []
    admins: list[AdminServer] = []

    async def run(
        snapshot: Snapshot, identity: tuple[str, str] | None = None, spiffe: str = ""
    ) -> Proxy:
        proxy = Proxy()
        proxies.append(proxy)
        if identity is not None:
            proxy.set_identity(identity[0], identity[1], spiffe)
        await proxy.apply(snapshot)
        admin = AdminServer(proxy)
        await admin.start("127.0.0.1", 0)
        admins.append(admin)
        return proxy

    yield run
    for admin in admins:
        await admin.close()
    for proxy in proxies:
        await proxy.close()


async def mesh_pair(
    ca: CertificateAuthority,
    tmp_path: Path,
    start: Start,
    backend: Backend | int,
    mtls: InboundMtls,
) -> tuple[Proxy, Proxy]:
    """A server sidecar in front of `backend` (or a port), and a client sidecar that calls it."""
    backend_port = backend if isinstance(backend, int) else backend.port
    server = await start(
        server_snapshot(backend_port, mtls, ca.roots),
        issue(ca, GREETER, tmp_path / "greeter"),
        GREETER,
    )
    client = await start(
        client_snapshot(server.port("inbound"), GREETER, ca.roots),
        issue(ca, FRONTEND, tmp_path / "frontend"),
        FRONTEND,
    )
    return server, client


async def plaintext_get(port: int) -> bytes:
    """A plaintext GET straight to a port; what comes back before the proxy closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: greeter\r\nConnection: close\r\n\r\n")
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 5.0)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


async def tls_get(port: int, context: ssl.SSLContext) -> bytes:
    """A GET over TLS with a client certificate; raises when the handshake or read fails."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=""
    )
    writer.write(b"GET / HTTP/1.1\r\nHost: greeter\r\nConnection: close\r\n\r\n")
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 5.0)
    finally:
        writer.close()


async def test_sidecars_talk_mtls_and_the_server_learns_the_caller(
    ca: CertificateAuthority, tmp_path: Path, start: Start, backend: Backend
) -> None:
    server, client = await mesh_pair(ca, tmp_path, start, backend, InboundMtls(mode="STRICT"))
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{client.port('outbound')}/hello")
        assert response.status_code == 200, response.headers.get("x-gossamer-reason")
        metrics = server.stats.prometheus()
    assert backend.requests[-1].target == "/hello"
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("istio_requests_total{") and 'reporter="destination"' in line
    )
    assert 'source_principal="spiffe://cluster.local/ns/default/sa/frontend"' in line
    assert 'connection_security_policy="mutual_tls"' in line
    # The caller's sidecar said which workload it serves: the callee's series name it, and
    # the app never sees the header.
    assert 'source_workload="frontend"' in line
    assert 'source_app="frontend"' in line and 'source_version="v2"' in line
    assert all(name.lower() != "x-gossamer-peer" for name, _ in backend.requests[-1].headers)
    # The caller's sidecar reports whom it reached, as its mTLS handshake proved.
    outbound = next(
        line
        for line in client.stats.prometheus().splitlines()
        if line.startswith("istio_requests_total{") and 'reporter="source"' in line
    )
    assert 'destination_principal="spiffe://cluster.local/ns/default/sa/greeter"' in outbound


async def test_strict_refuses_a_plaintext_client(
    ca: CertificateAuthority, tmp_path: Path, start: Start, backend: Backend
) -> None:
    server, _ = await mesh_pair(ca, tmp_path, start, backend, InboundMtls(mode="STRICT"))
    assert await plaintext_get(server.port("inbound")) == b""
    assert not backend.requests


async def test_strict_refuses_a_certificate_from_a_foreign_ca(
    ca: CertificateAuthority, tmp_path: Path, start: Start, backend: Backend
) -> None:
    server, _ = await mesh_pair(ca, tmp_path, start, backend, InboundMtls(mode="STRICT"))
    foreign = CertificateAuthority.load_or_create(tmp_path / "foreign")
    cert, key = issue(foreign, FRONTEND, tmp_path / "intruder")
    # The intruder trusts the mesh's root (it can see the server's certificate), but its own
    # certificate chains to another root.
    context = client_context(cert, key, ca.roots)
    with pytest.raises((ssl.SSLError, ConnectionResetError, asyncio.IncompleteReadError)):
        answer = await tls_get(server.port("inbound"), context)
        assert answer == b"", "a foreign certificate got an answer"
        raise ConnectionResetError("closed without an answer")
    assert not backend.requests


async def test_strict_refuses_an_expired_certificate(
    ca: CertificateAuthority, tmp_path: Path, start: Start, backend: Backend
) -> None:
    server, _ = await mesh_pair(ca, tmp_path, start, backend, InboundMtls(mode="STRICT"))
    cert, key = expired_certificate(tmp_path / "ca", tmp_path / "expired", FRONTEND)
    context = client_context(cert, key, ca.roots)
    with pytest.raises((ssl.SSLError, ConnectionResetError, asyncio.IncompleteReadError)):
        answer = await tls_get(server.port("inbound"), context)
        assert answer == b"", "an expired certificate got an answer"
        raise ConnectionResetError("closed without an answer")
    assert not backend.requests


async def test_strict_refuses_a_spiffe_id_of_another_trust_domain(
    ca: CertificateAuthority, tmp_path: Path, start: Start, backend: Backend
) -> None:
    server, _ = await mesh_pair(ca, tmp_path, start, backend, InboundMtls(mode="STRICT"))
    # Same root and key, but signing for another trust domain: the chain verifies, the id is
    # not one of this mesh's.
    other = CertificateAuthority.load_or_create(tmp_path / "ca", trust_domain="elsewhere.example")
    intruder = spiffe_id("elsewhere.example", "default", "frontend")
    cert, key = issue(other, intruder, tmp_path / "intruder")
    context = client_context(cert, key, ca.roots)
    answer = b""
    with contextlib.suppress(ssl.SSLError, ConnectionResetError, asyncio.IncompleteReadError):
        answer = await tls_get(server.port("inbound"), context)
    assert answer == b""
    assert not backend.requests


async def test_the_client_refuses_a_server_with_the_wrong_identity(
    ca: CertificateAuthority, tmp_path: Path, start: Start, backend: Backend
) -> None:
    server, _ = await mesh_pair(ca, tmp_path, start, backend, InboundMtls(mode="STRICT"))
    # This caller expects the ratings service at that address, and finds greeter there.
    expecting = spiffe_id("cluster.local", "default", "ratings")
    client = await start(
        client_snapshot(server.port("inbound"), expecting, ca.roots),
        issue(ca, FRONTEND, tmp_path / "frontend2"),
        FRONTEND,
    )
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{client.port('outbound')}/")
    assert response.status_code == 503
    reason = response.headers["x-gossamer-reason"]
    assert (
        "upstream mTLS" in reason
        and "expected spiffe://cluster.local/ns/default/sa/ratings" in reason
    )
    assert not backend.requests


async def test_permissive_takes_mtls_and_plaintext_on_one_port(
    ca: CertificateAuthority, tmp_path: Path, start: Start, backend: Backend
) -> None:
    server, client = await mesh_pair(ca, tmp_path, start, backend, InboundMtls(mode="PERMISSIVE"))
    plain = await plaintext_get(server.port("inbound"))
    assert plain.startswith(b"HTTP/1.1 200")
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{client.port('outbound')}/")
    assert response.status_code == 200
    assert len(backend.requests) == 2


async def test_a_strict_port_override_refuses_plaintext_requests_to_that_port(
    ca: CertificateAuthority, tmp_path: Path, start: Start, backend: Backend
) -> None:
    assert backend.server is not None
    app_port = backend.server.sockets[0].getsockname()[1]
    mtls = InboundMtls(mode="PERMISSIVE", ports=((app_port, "STRICT"),))
    server, client = await mesh_pair(ca, tmp_path, start, backend, mtls)
    plain = await plaintext_get(server.port("inbound"))
    assert plain.startswith(b"HTTP/1.1 403")
    assert f"mTLS required on port {app_port}".encode() in plain
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{client.port('outbound')}/")
    assert response.status_code == 200
    assert len(backend.requests) == 1


async def test_a_new_certificate_serves_new_handshakes_and_old_connections_carry_on(
    ca: CertificateAuthority, tmp_path: Path, start: Start, backend: Backend
) -> None:
    server, client = await mesh_pair(ca, tmp_path, start, backend, InboundMtls(mode="STRICT"))
    async with httpx.AsyncClient() as http:
        url = f"http://127.0.0.1:{client.port('outbound')}/"
        assert (await http.get(url)).status_code == 200
        before = backend.connections
        # Both sides renew (new keys, new files in new folders) while a pooled connection
        # between the sidecars stays open.
        server.set_identity(*issue(ca, GREETER, tmp_path / "greeter-2"), GREETER)
        client.set_identity(*issue(ca, FRONTEND, tmp_path / "frontend-2"), FRONTEND)
        for _ in range(5):
            assert (await http.get(url)).status_code == 200
        assert backend.connections == before, "the pooled mTLS connection was dropped"
        # A fresh connection between the sidecars handshakes with the new certificates.
        for cluster in client.clusters.values():
            for endpoint in cluster.endpoints:
                for upstream in list(endpoint.idle):
                    upstream.close()
        assert (await http.get(url)).status_code == 200


async def test_the_config_dump_and_admin_never_show_a_private_key(
    ca: CertificateAuthority, tmp_path: Path, start: Start, backend: Backend
) -> None:
    server, _ = await mesh_pair(ca, tmp_path, start, backend, InboundMtls(mode="STRICT"))
    dump = msgspec.json.encode(server.snapshot).decode()
    assert "PRIVATE KEY" not in dump
    assert "PRIVATE KEY" not in repr(server.mesh_tls)
    assert "PRIVATE KEY" not in server.stats.prometheus()


def expired_certificate(ca_dir: Path, folder: Path, spiffe: str) -> tuple[str, str]:
    """A certificate the mesh CA's key signed, valid for an hour that ended yesterday."""
    ca_key = serialization.load_pem_private_key((ca_dir / "ca-key.pem").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca-cert.pem").read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(yesterday - dt.timedelta(hours=1))
        .not_valid_after(yesterday)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe)]), critical=True
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(mode=0o700)
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


async def test_a_second_root_in_the_bundle_lets_the_next_ca_in_during_a_rotation(
    ca: CertificateAuthority, tmp_path: Path, start: Start, backend: Backend
) -> None:
    assert backend.server is not None
    backend_port = backend.server.sockets[0].getsockname()[1]
    next_ca = CertificateAuthority.load_or_create(tmp_path / "next-ca")
    # The server's sidecar trusts both roots (the CA's extra-roots.pem puts both in the
    # snapshot); its own certificate is still from the old CA.
    bundle = (*ca.roots, *next_ca.roots)
    server = await start(
        server_snapshot(backend_port, InboundMtls(mode="STRICT"), bundle),
        issue(ca, GREETER, tmp_path / "greeter"),
        GREETER,
    )
    # A caller already moved to the new CA, also trusting both.
    client = await start(
        client_snapshot(server.port("inbound"), GREETER, bundle),
        issue(next_ca, FRONTEND, tmp_path / "frontend"),
        FRONTEND,
    )
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{client.port('outbound')}/")
    assert response.status_code == 200, response.headers.get("x-gossamer-reason")
    # With the old root only, the same caller is refused.
    old_only = await start(
        server_snapshot(backend_port, InboundMtls(mode="STRICT"), ca.roots),
        issue(ca, GREETER, tmp_path / "greeter-old"),
        GREETER,
    )
    refused = await start(
        client_snapshot(old_only.port("inbound"), GREETER, bundle),
        issue(next_ca, FRONTEND, tmp_path / "frontend-2"),
        FRONTEND,
    )
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{refused.port('outbound')}/")
    assert response.status_code == 503


async def test_a_certificate_that_does_not_fit_its_key_is_refused_and_the_old_one_kept(
    ca: CertificateAuthority, tmp_path: Path, start: Start, backend: Backend
) -> None:
    server, client = await mesh_pair(ca, tmp_path, start, backend, InboundMtls(mode="STRICT"))
    kept = server.identity
    cert, _ = issue(ca, GREETER, tmp_path / "greeter-2")
    _, other_key = issue(ca, GREETER, tmp_path / "greeter-3")
    with pytest.raises(SnapshotError, match="mesh certificate"):
        server.set_identity(cert, other_key, GREETER)
    assert server.identity == kept
    for cluster in client.clusters.values():
        for endpoint in cluster.endpoints:
            for upstream in list(endpoint.idle):
                upstream.close()
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{client.port('outbound')}/")
    assert response.status_code == 200


SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"


async def open_tunnel(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An upgraded connection through the client sidecar (plaintext to it, mTLS beyond)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: greeter\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n")
    status, _ = await asyncio.wait_for(read_head(reader), 5.0)
    assert status.startswith(b"HTTP/1.1 101 ")
    return reader, writer


async def test_a_client_half_close_through_mtls_still_gets_the_backend_answer(
    ca: CertificateAuthority, tmp_path: Path, start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    # TLS cannot end one way only: the client's end is held, the answer comes back, and the
    # backend's end closes the tunnel.
    errors = LoopErrors().install(asyncio.get_running_loop())
    heard: list[bytes] = []

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(SWITCHED)
        heard.append(await reader.readexactly(50))
        writer.write(b"the backend answers")
        await writer.drain()

    async with serving(upstream) as port:
        server, client = await mesh_pair(ca, tmp_path, start, port, InboundMtls(mode="STRICT"))
        reader, writer = await open_tunnel(client.port("outbound"))
        writer.write(b"q" * 50)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5.0) == b"the backend answers"
        writer.close()
    assert heard == [b"q" * 50]
    await eventually(lambda: idle(client) and idle(server), what="tunnels closed")
    assert errors.seen == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_backend_half_close_through_mtls_reaches_the_client_and_ends_the_tunnel(
    ca: CertificateAuthority, tmp_path: Path, start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    errors = LoopErrors().install(asyncio.get_running_loop())
    heard: list[bytes] = []

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(SWITCHED + b"the backend is done")
        writer.write_eof()
        heard.append(await reader.read())

    async with serving(upstream) as port:
        server, client = await mesh_pair(ca, tmp_path, start, port, InboundMtls(mode="STRICT"))
        reader, writer = await open_tunnel(client.port("outbound"))
        assert await asyncio.wait_for(reader.read(), 5.0) == b"the backend is done"
        # The mTLS hop cannot stay open one way: the backend's connection ends too.
        await eventually(lambda: heard == [b""], what="the backend's connection closed")
        writer.close()
    await eventually(lambda: idle(client) and idle(server), what="tunnels closed")
    assert errors.seen == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_peer_metadata_is_believed_only_for_the_namespace_the_certificate_proves(
    ca: CertificateAuthority, tmp_path: Path, start: Start, backend: Backend
) -> None:
    server = await start(
        server_snapshot(backend.port, InboundMtls(mode="STRICT"), ca.roots),
        issue(ca, GREETER, tmp_path / "greeter"),
        GREETER,
    )
    caller = issue(ca, FRONTEND, tmp_path / "caller")
    context = client_context(caller[0], caller[1], ca.roots)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port("inbound"), ssl=context, server_hostname=""
    )
    # A workload of `default` claiming to be another namespace's: not believed.
    writer.write(
        b"GET / HTTP/1.1\r\nHost: greeter\r\nConnection: close\r\n"
        b"x-gossamer-peer: workload=billing,namespace=finance,app=billing,version=v1\r\n\r\n"
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    [line] = [
        line
        for line in server.stats.prometheus().splitlines()
        if line.startswith("istio_requests_total{")
    ]
    assert 'source_workload="unknown"' in line
    assert 'source_workload_namespace="default"' in line
    assert "billing" not in line
