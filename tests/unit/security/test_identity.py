"""Workload identities and mesh mTLS: real keys, real certificates, real TLS over loopback."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gossamer.security.ca import CertificateAuthority
from gossamer.security.identity import WorkloadIdentity
from gossamer.security.spiffe import (
    client_context,
    peer_spiffe_id,
    principal_of,
    server_context,
    spiffe_id,
)

DEADLINE_S = 5.0
WEB = "spiffe://cluster.local/ns/shop/sa/web"
CART = "spiffe://cluster.local/ns/shop/sa/cart"


@dataclass(frozen=True)
class Seen:
    """What one end of a connection observed: the peer's SPIFFE id, or why it failed."""

    peer: str = ""
    error: str = ""


def _failure(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return type(exc).__name__


def _serve_once(listener: socket.socket, context: ssl.SSLContext) -> Seen:
    """Accept one connection, handshake, answer one ping with pong."""
    connection, _ = listener.accept()
    connection.settimeout(DEADLINE_S)
    try:
        with context.wrap_socket(connection, server_side=True) as tls:
            peer = peer_spiffe_id(tls.getpeercert())
            if tls.recv(4) == b"ping":
                tls.sendall(b"pong")
            return Seen(peer=peer)
    except OSError as exc:
        return Seen(error=_failure(exc))
    finally:
        connection.close()


def tls_client(context: ssl.SSLContext) -> Callable[[socket.socket], Seen]:
    """A client that handshakes with `context`, sends ping and expects pong."""

    def run(raw: socket.socket) -> Seen:
        try:
            with context.wrap_socket(raw) as tls:
                peer = peer_spiffe_id(tls.getpeercert())
                tls.sendall(b"ping")
                # Under TLS 1.3 the client's handshake ends before the server has checked the
                # client's certificate: a refusal only shows on the first read.
                if tls.recv(4) != b"pong":
                    return Seen(error="closed without a reply")
                return Seen(peer=peer)
        except OSError as exc:
            return Seen(error=_failure(exc))

    return run


def plaintext_client(raw: socket.socket) -> Seen:
    """A client that forgot TLS: it sends an HTTP request in the clear."""
    try:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        reply = raw.recv(100)
    except OSError as exc:
        return Seen(error=type(exc).__name__)
    return Seen(error="" if reply.startswith(b"HTTP/") else "no HTTP reply")


def connect(server: ssl.SSLContext, client: Callable[[socket.socket], Seen]) -> tuple[Seen, Seen]:
    """One connection over 127.0.0.1: (what the server saw, what the client saw)."""
    with socket.create_server(("127.0.0.1", 0)) as listener, ThreadPoolExecutor(1) as pool:
        listener.settimeout(DEADLINE_S)
        served = pool.submit(_serve_once, listener, server)
        with socket.create_connection(listener.getsockname(), timeout=DEADLINE_S) as raw:
            seen_by_client = client(raw)
        return served.result(timeout=DEADLINE_S), seen_by_client


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "ca", lifetime_s=3600)


def enrolled(ca: CertificateAuthority, namespace: str, account: str) -> WorkloadIdentity:
    identity = WorkloadIdentity.create(spiffe_id(ca.trust_domain, namespace, account))
    identity.accept(ca.sign(identity.csr(), namespace=namespace, service_account=account))
    return identity


def files_of(identity: WorkloadIdentity, tmp_path: Path) -> tuple[Path, Path]:
    return identity.write(tmp_path / principal_of(identity.spiffe).replace("/", "_"))


def mesh_server(
    ca: CertificateAuthority, tmp_path: Path, *, require_client_cert: bool = True
) -> ssl.SSLContext:
    cert, key = files_of(enrolled(ca, "shop", "cart"), tmp_path)
    return server_context(cert, key, ca.roots, require_client_cert=require_client_cert)


def mesh_client(ca: CertificateAuthority, tmp_path: Path) -> ssl.SSLContext:
    cert, key = files_of(enrolled(ca, "shop", "web"), tmp_path)
    return client_context(cert, key, ca.roots)


def test_mtls_peers_see_each_others_spiffe_ids(ca: CertificateAuthority, tmp_path: Path) -> None:
    server, client = connect(mesh_server(ca, tmp_path), tls_client(mesh_client(ca, tmp_path)))

    assert server == Seen(peer=WEB)
    assert client == Seen(peer=CART)


def test_a_client_from_another_mesh_is_refused(ca: CertificateAuthority, tmp_path: Path) -> None:
    foreign = CertificateAuthority.load_or_create(tmp_path / "foreign-ca")
    cert, key = files_of(enrolled(foreign, "shop", "web"), tmp_path / "foreign")
    # The intruder even trusts our root, so only the server's check can stop it.
    intruder = client_context(cert, key, ca.roots)

    server, client = connect(mesh_server(ca, tmp_path), tls_client(intruder))

    assert server == Seen(error="self-signed certificate in certificate chain")
    assert client.peer == ""
    assert client.error


def test_a_server_from_another_mesh_is_refused(ca: CertificateAuthority, tmp_path: Path) -> None:
    foreign = CertificateAuthority.load_or_create(tmp_path / "foreign-ca")
    cert, key = files_of(enrolled(foreign, "shop", "cart"), tmp_path / "foreign")
    impostor = server_context(cert, key, ca.roots, require_client_cert=True)

    server, client = connect(impostor, tls_client(mesh_client(ca, tmp_path)))

    assert client == Seen(error="self-signed certificate in certificate chain")
    assert server.peer == ""


def expired_leaf_files(ca_directory: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A leaf for spiffe://cluster.local/ns/shop/sa/web, correct but for its dates."""
    ca_key = serialization.load_pem_private_key((ca_directory / "ca-key.pem").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate((ca_directory / "ca-cert.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=2))
        .not_valid_after(now - dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(WEB)]), critical=True
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "expired.pem", tmp_path / "expired-key.pem"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_an_expired_client_certificate_is_refused(ca: CertificateAuthority, tmp_path: Path) -> None:
    cert, key = expired_leaf_files(tmp_path / "ca", tmp_path)

    server, client = connect(
        mesh_server(ca, tmp_path), tls_client(client_context(cert, key, ca.roots))
    )

    assert server == Seen(error="certificate has expired")
    assert client.peer == ""


def test_a_plaintext_client_gets_no_reply_from_a_strict_server(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    server, client = connect(mesh_server(ca, tmp_path), plaintext_client)

    assert server == Seen(error="HTTP_REQUEST")
    assert client.error


def test_a_client_without_a_certificate_needs_a_permissive_server(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.load_verify_locations(cadata="".join(ca.roots))

    strict, _ = connect(mesh_server(ca, tmp_path), tls_client(anonymous))
    permissive, client = connect(
        mesh_server(ca, tmp_path, require_client_cert=False), tls_client(anonymous)
    )

    assert strict == Seen(error="PEER_DID_NOT_RETURN_A_CERTIFICATE")
    assert permissive == Seen(peer="")
    assert client == Seen(peer=CART)


def test_a_client_limited_to_tls_1_2_is_refused(ca: CertificateAuthority, tmp_path: Path) -> None:
    old = mesh_client(ca, tmp_path)
    old.minimum_version = ssl.TLSVersion.TLSv1_2
    old.maximum_version = ssl.TLSVersion.TLSv1_2

    server, client = connect(mesh_server(ca, tmp_path), tls_client(old))

    assert server == Seen(error="UNSUPPORTED_PROTOCOL")
    assert client.error


def test_accept_refuses_a_certificate_for_another_key(ca: CertificateAuthority) -> None:
    requester = WorkloadIdentity.create(WEB)
    other = WorkloadIdentity.create(WEB)
    chain = ca.sign(requester.csr(), namespace="shop", service_account="web")

    with pytest.raises(ValueError, match="issued for another key"):
        other.accept(chain)


def test_accept_refuses_a_certificate_for_another_identity(ca: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    web = WorkloadIdentity(WEB, key)
    # The same key, but a certificate legitimately issued to cart.
    claim = WorkloadIdentity(CART, key)
    chain = ca.sign(claim.csr(), namespace="shop", service_account="cart")

    with pytest.raises(ValueError) as refused:
        web.accept(chain)

    assert str(refused.value) == f"the certificate is for {CART}, not {WEB}"


def test_accept_refuses_a_chain_that_mixes_two_cas(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    foreign = CertificateAuthority.load_or_create(tmp_path / "foreign-ca")
    web = WorkloadIdentity.create(WEB)
    chain = ca.sign(web.csr(), namespace="shop", service_account="web")
    leaf = x509.load_pem_x509_certificates(chain.encode())[0]
    # Both roots have the same name, so only the signature tells them apart.
    mixed = leaf.public_bytes(serialization.Encoding.PEM).decode() + foreign.roots[0]

    with pytest.raises(ValueError) as refused:
        web.accept(mixed)

    assert str(refused.value) == "the leaf is not issued by CN=Gossamer mesh root CA,O=Gossamer"
    with pytest.raises(RuntimeError):
        _ = web.not_after


def test_renewal_is_due_at_half_the_lifetime(ca: CertificateAuthority) -> None:
    identity = WorkloadIdentity.create(WEB)
    identity.accept(
        ca.sign(identity.csr(), namespace="shop", service_account="web", lifetime_s=120)
    )

    leaf = x509.load_pem_x509_certificate(identity.chain_pem.encode())
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    assert identity.not_after == end
    issued = start + dt.timedelta(seconds=60)  # notBefore is back-dated for clock skew
    assert identity.renew_at() == (issued + (end - issued) / 2).timestamp()
    # Issued now for 120 s: renew 60 s from now, not 30 (half of the back-dated span).
    assert time.time() + 55 < identity.renew_at() < time.time() + 65


def test_renewal_uses_a_new_key_and_leaves_the_current_identity_serving(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    current = enrolled(ca, "shop", "web")
    cert, key = current.write(tmp_path / "web")
    first_key = key.read_bytes()

    renewal = current.renewal()
    renewal.accept(ca.sign(renewal.csr(), namespace="shop", service_account="web"))
    renewal.write(tmp_path / "web")

    assert current.chain_pem and current.chain_pem != renewal.chain_pem
    assert key.read_bytes() != first_key
    assert cert.read_text() == renewal.chain_pem
    assert sorted(path.name for path in (tmp_path / "web").iterdir()) == [
        "cert-chain.pem",
        "key.pem",
    ]


def test_written_files_are_private_and_load_in_ssl(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    cert, key = enrolled(ca, "shop", "web").write(tmp_path / "secrets" / "web")

    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key)


def test_an_identity_without_a_certificate_says_so() -> None:
    identity = WorkloadIdentity.create(WEB)

    with pytest.raises(RuntimeError, match="has no certificate yet"):
        identity.renew_at()
    assert repr(identity) == f"WorkloadIdentity('{WEB}', no certificate)"


def test_the_private_key_is_not_in_repr_or_str(ca: CertificateAuthority, tmp_path: Path) -> None:
    identity = enrolled(ca, "shop", "web")
    _, key_path = identity.write(tmp_path / "web")
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    secret = key.private_numbers().private_value

    for text in (repr(identity), str(identity)):
        assert "PRIVATE" not in text
        assert str(secret) not in text
        assert f"{secret:x}" not in text
        assert WEB in text


def test_peer_spiffe_id_takes_the_first_spiffe_uri() -> None:
    peercert = {
        "subject": (),
        "subjectAltName": (("DNS", "web.shop"), ("URI", "https://x"), ("URI", WEB), ("URI", CART)),
    }

    assert peer_spiffe_id(peercert) == WEB
    assert peer_spiffe_id({"subjectAltName": (("DNS", "web.shop"),)}) == ""
    assert peer_spiffe_id({}) == ""
    assert peer_spiffe_id(None) == ""


def test_principal_is_the_spiffe_id_without_its_scheme() -> None:
    assert principal_of(WEB) == "cluster.local/ns/shop/sa/web"
    assert principal_of("") == ""
