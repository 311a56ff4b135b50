"""The mesh CA: its files on disk, what it signs and refuses, and chains that verify in TLS."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gossamer.security.ca import CertificateAuthority, CertificateRequestError
from gossamer.security.identity import WorkloadIdentity
from gossamer.security.spiffe import client_context, peer_spiffe_id, server_context, spiffe_id

DEADLINE_S = 5.0
WEB = "spiffe://cluster.local/ns/shop/sa/web"
CART = "spiffe://cluster.local/ns/shop/sa/cart"
PLUG_IN_FILES = ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]
CLIENT_FILES = ["trust-bundle.pem"]


def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str | None = None
) -> tuple[Any, Any]:
    """One TLS connection over 127.0.0.1: (server's getpeercert(), client's getpeercert()).

    A byte goes each way after the handshake, because under TLS 1.3 a server's refusal of the
    client certificate only reaches the client on its first read.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener, ThreadPoolExecutor(1) as pool:
        listener.settimeout(DEADLINE_S)

        def serve() -> Any:
            connection, _ = listener.accept()
            connection.settimeout(DEADLINE_S)
            with server.wrap_socket(connection, server_side=True) as tls:
                assert tls.recv(1) == b"?"
                tls.sendall(b"!")
                return tls.getpeercert()

        served = pool.submit(serve)
        with (
            socket.create_connection(listener.getsockname(), timeout=DEADLINE_S) as raw,
            client.wrap_socket(raw, server_hostname=server_hostname) as tls,
        ):
            tls.sendall(b"?")
            assert tls.recv(1) == b"!"
            seen_by_client = tls.getpeercert()
        return served.result(timeout=DEADLINE_S), seen_by_client


def enroll(ca: CertificateAuthority, account: str, directory: Path) -> tuple[Path, Path]:
    """A workload of namespace shop with its certificate files written under `directory`."""
    identity = WorkloadIdentity.create(spiffe_id(ca.trust_domain, "shop", account))
    identity.accept(ca.sign(identity.csr(), namespace="shop", service_account=account))
    return identity.write(directory / account)


def csr(key: Any, names: list[x509.GeneralName]) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def fingerprint(pem: str) -> bytes:
    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256())


def certificates(pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode())


def pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def ca_certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None, **kw: Any
) -> x509.Certificate:
    """An operator's CA certificate: a root when `issuer` is None, else signed by `issuer`."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp"),
            x509.NameAttribute(NameOID.COMMON_NAME, subject),
        ]
    )
    issuer_key: Any = kw.get("issuer_key", key)
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + kw.get("valid_for", dt.timedelta(days=3650)))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
        .sign(issuer_key, hashes.SHA256())
    )


def write_operator_ca(
    directory: Path, intermediate_valid_for: dt.timedelta = dt.timedelta(days=365)
) -> tuple[x509.Certificate, x509.Certificate]:
    """An offline root and an intermediate it signed, in Istio's plug-in layout."""
    root_key, intermediate_key = p256(), p256()
    root = ca_certificate("Example offline root", root_key, None)
    intermediate = ca_certificate(
        "Example mesh intermediate",
        intermediate_key,
        root,
        issuer_key=root_key,
        valid_for=intermediate_valid_for,
    )
    directory.mkdir(mode=0o700)
    (directory / "ca-cert.pem").write_text(pem(intermediate))
    (directory / "ca-key.pem").write_bytes(
        intermediate_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / "root-cert.pem").write_text(pem(root))
    (directory / "cert-chain.pem").write_text(pem(intermediate) + pem(root))
    return root, intermediate


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "ca")


def test_the_first_start_makes_a_root_in_the_plug_in_layout(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "ca"

    ca = CertificateAuthority.load_or_create(directory)

    assert sorted(path.name for path in directory.iterdir()) == PLUG_IN_FILES + CLIENT_FILES
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "ca-key.pem").stat().st_mode) == 0o600
    root_pem = (directory / "root-cert.pem").read_text()
    assert ca.roots == (root_pem,)
    assert (directory / "ca-cert.pem").read_text() == root_pem
    assert (directory / "cert-chain.pem").read_text() == root_pem
    root = x509.load_pem_x509_certificate(root_pem.encode())
    assert root.subject.rfc4514_string() == "CN=Gossamer mesh root CA,O=Gossamer"
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert root.not_valid_after_utc - root.not_valid_before_utc >= dt.timedelta(days=3650)
    constraints = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length is None
    usage = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert (ca.trust_domain, ca.lifetime_s) == ("cluster.local", 86400.0)


def test_a_restart_keeps_the_same_root(tmp_path: Path) -> None:
    first = CertificateAuthority.load_or_create(tmp_path / "ca")
    key_before = (tmp_path / "ca" / "ca-key.pem").read_bytes()

    second = CertificateAuthority.load_or_create(tmp_path / "ca")

    assert fingerprint(second.roots[0]) == fingerprint(first.roots[0])
    assert (tmp_path / "ca" / "ca-key.pem").read_bytes() == key_before


def test_a_lifetime_under_a_minute_is_refused_before_touching_disk(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as refused:
        CertificateAuthority.load_or_create(tmp_path / "ca", lifetime_s=59)

    assert str(refused.value) == "a certificate lifetime of 59 s is too short; the minimum is 60 s"
    assert not (tmp_path / "ca").exists()


def test_a_signed_leaf_carries_the_spiffe_id_for_mtls(ca: CertificateAuthority) -> None:
    key = p256()
    now = dt.datetime.now(dt.UTC)

    chain = certificates(
        ca.sign(
            csr(key, [x509.UniformResourceIdentifier(WEB)]),
            namespace="shop",
            service_account="web",
            lifetime_s=120,
        )
    )

    leaf, signer = chain
    assert pem(signer) == ca.roots[0]
    assert leaf.public_key() == key.public_key()
    assert leaf.subject == x509.Name([])
    assert leaf.issuer == signer.subject
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert list(san.value) == [x509.UniformResourceIdentifier(WEB)]
    assert abs(leaf.not_valid_after_utc - (now + dt.timedelta(seconds=120))) < dt.timedelta(
        seconds=3
    )
    assert abs(leaf.not_valid_before_utc - (now - dt.timedelta(seconds=60))) < dt.timedelta(
        seconds=3
    )
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert not constraints.value.ca
    key_usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert key_usage.critical
    assert key_usage.value.digital_signature
    assert key_usage.value.key_encipherment
    authority = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    subject_key = signer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert authority.key_identifier == subject_key.digest
    leaf.verify_directly_issued_by(signer)


def test_each_leaf_gets_its_own_serial(ca: CertificateAuthority) -> None:
    request = csr(p256(), [x509.UniformResourceIdentifier(WEB)])

    serials = {
        certificates(ca.sign(request, namespace="shop", service_account="web"))[0].serial_number
        for _ in range(3)
    }

    assert len(serials) == 3


def test_a_csr_for_another_identity_is_refused_naming_both(ca: CertificateAuthority) -> None:
    request = csr(p256(), [x509.UniformResourceIdentifier(CART)])

    with pytest.raises(CertificateRequestError) as refused:
        ca.sign(request, namespace="shop", service_account="web")

    assert (
        str(refused.value) == f"the CSR asks for {CART} but the requester is authenticated as {WEB}"
    )


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (
            [x509.UniformResourceIdentifier(WEB), x509.DNSName("web.shop.svc")],
            f"the CSR asks for DNS name web.shop.svc; a workload certificate names only {WEB}",
        ),
        (
            [x509.UniformResourceIdentifier(WEB), x509.UniformResourceIdentifier(CART)],
            f"the CSR asks for {WEB}, {CART}; it must ask for exactly one URI, {WEB}",
        ),
        ([], f"the CSR asks for no URI; it must ask for exactly one URI, {WEB}"),
    ],
    ids=["dns-name", "two-uris", "no-san"],
)
def test_a_csr_must_ask_for_the_spiffe_id_alone(
    ca: CertificateAuthority, names: list[x509.GeneralName], message: str
) -> None:
    with pytest.raises(CertificateRequestError) as refused:
        ca.sign(csr(p256(), names), namespace="shop", service_account="web")

    assert str(refused.value) == message


def test_a_tampered_csr_is_refused(ca: CertificateAuthority) -> None:
    request = x509.load_pem_x509_csr(csr(p256(), [x509.UniformResourceIdentifier(CART)]).encode())
    # Someone on the way rewrites the name asked for; the signature no longer matches.
    der = request.public_bytes(serialization.Encoding.DER)
    assert der.count(b"/sa/cart") == 1
    altered = x509.load_der_x509_csr(der.replace(b"/sa/cart", b"/sa/webs"))

    with pytest.raises(CertificateRequestError) as refused:
        ca.sign(
            altered.public_bytes(serialization.Encoding.PEM),
            namespace="shop",
            service_account="webs",
        )

    assert "signature does not match" in str(refused.value)


def test_a_small_rsa_key_is_refused(ca: CertificateAuthority) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)

    with pytest.raises(CertificateRequestError) as refused:
        ca.sign(
            csr(weak, [x509.UniformResourceIdentifier(WEB)]),
            namespace="shop",
            service_account="web",
        )

    assert str(refused.value) == "the CSR's RSA key has 1024 bits; at least 2048 are needed"


def test_garbage_is_refused_as_a_csr(ca: CertificateAuthority) -> None:
    with pytest.raises(CertificateRequestError, match="the CSR is not a PEM certificate request"):
        ca.sign("hello", namespace="shop", service_account="web")


def test_a_short_lifetime_per_request_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="the minimum is 60 s"):
        ca.sign(
            csr(p256(), [x509.UniformResourceIdentifier(WEB)]),
            namespace="shop",
            service_account="web",
            lifetime_s=30,
        )


def test_an_operator_intermediate_signs_and_verifies_in_a_handshake(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    root, intermediate = write_operator_ca(directory)
    before = {path.name: path.read_bytes() for path in directory.iterdir()}

    ca = CertificateAuthority.load_or_create(directory)
    identity = WorkloadIdentity.create(WEB)
    chain = ca.sign(identity.csr(), namespace="shop", service_account="web")

    assert ca.roots == (pem(root),)
    assert certificates(chain)[1:] == [intermediate]
    assert repr(ca) == (
        "CertificateAuthority(subject='CN=Example mesh intermediate,O=Example Corp', "
        "trust_domain='cluster.local')"
    )
    # The operator's files are never rewritten; the clients' bundle is added beside them.
    after = {path.name: path.read_bytes() for path in directory.iterdir()}
    assert after.pop("trust-bundle.pem") == pem(root).encode()
    assert after == before
    cert, key = enroll(ca, "cart", tmp_path)
    identity.accept(chain)
    client_cert, client_key = identity.write(tmp_path / "web")
    server_saw, client_saw = handshake(
        server_context(cert, key, ca.roots, require_client_cert=True),
        client_context(client_cert, client_key, ca.roots),
    )
    assert (peer_spiffe_id(server_saw), peer_spiffe_id(client_saw)) == (WEB, CART)


def test_leaves_never_outlive_the_signing_certificate(tmp_path: Path) -> None:
    _, intermediate = write_operator_ca(tmp_path / "ca", dt.timedelta(hours=1))
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")

    leaf = certificates(
        ca.sign(
            csr(p256(), [x509.UniformResourceIdentifier(WEB)]),
            namespace="shop",
            service_account="web",
        )
    )[0]

    assert leaf.not_valid_after_utc == intermediate.not_valid_after_utc


def test_an_operator_key_that_does_not_match_is_refused(tmp_path: Path) -> None:
    write_operator_ca(tmp_path / "ca")
    (tmp_path / "ca" / "ca-key.pem").write_bytes(
        p256().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    with pytest.raises(ValueError) as refused:
        CertificateAuthority.load_or_create(tmp_path / "ca")

    directory = tmp_path / "ca"
    assert str(refused.value) == (
        f"{directory / 'ca-key.pem'} is not the key of {directory / 'ca-cert.pem'}"
    )


def test_a_chain_that_does_not_reach_the_root_is_refused(tmp_path: Path) -> None:
    write_operator_ca(tmp_path / "ca")
    stranger = ca_certificate("Another root", p256(), None)
    (tmp_path / "ca" / "root-cert.pem").write_text(pem(stranger))

    with pytest.raises(ValueError) as refused:
        CertificateAuthority.load_or_create(tmp_path / "ca")

    assert str(refused.value) == (
        f"in {tmp_path / 'ca'}, CN=Example offline root,O=Example Corp is not issued by "
        "CN=Another root,O=Example Corp: the chain does not reach root-cert.pem"
    )


def test_a_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    write_operator_ca(tmp_path / "ca")
    (tmp_path / "ca" / "ca-key.pem").unlink()

    with pytest.raises(ValueError) as refused:
        CertificateAuthority.load_or_create(tmp_path / "ca")

    assert str(refused.value) == (
        f"{tmp_path / 'ca'} has ca-cert.pem but no ca-key.pem; "
        "supply both, or neither to have a new root made"
    )


def test_extra_roots_let_a_new_roots_workloads_in(tmp_path: Path) -> None:
    new = CertificateAuthority.load_or_create(tmp_path / "new-ca")
    CertificateAuthority.load_or_create(tmp_path / "ca")
    (tmp_path / "ca" / "extra-roots.pem").write_text(new.roots[0])
    current = CertificateAuthority.load_or_create(tmp_path / "ca")

    assert current.roots[1:] == new.roots
    assert current.roots[0] == (tmp_path / "ca" / "root-cert.pem").read_text()
    # Clients of the control plane trust both roots while the rotation lasts.
    assert (tmp_path / "ca" / "trust-bundle.pem").read_text() == "".join(current.roots)
    cert, key = enroll(current, "cart", tmp_path / "current")
    server = server_context(cert, key, current.roots, require_client_cert=True)
    cert, key = enroll(new, "web", tmp_path / "new")
    server_saw, client_saw = handshake(server, client_context(cert, key, current.roots))
    assert (peer_spiffe_id(server_saw), peer_spiffe_id(client_saw)) == (WEB, CART)


def test_a_server_certificate_verifies_by_name_and_by_address(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    chain, key = ca.issue_server_certificate(["localhost", "127.0.0.1", "::1"])
    cert_path, key_path = tmp_path / "api.pem", tmp_path / "api-key.pem"
    cert_path.write_text(chain)
    key_path.write_text(key)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    # What an HTTP client of the control plane API does, held to Python 3.13's strictness.
    client = ssl.create_default_context(cadata=ca.roots[0])
    client.verify_flags |= ssl.VERIFY_X509_STRICT

    _, by_name = handshake(server, client, server_hostname="localhost")
    _, by_address = handshake(server, client, server_hostname="127.0.0.1")

    assert by_name["subjectAltName"] == (
        ("DNS", "localhost"),
        ("IP Address", "127.0.0.1"),
        ("IP Address", "0:0:0:0:0:0:0:1"),
    )
    assert by_address == by_name
    leaf = certificates(chain)[0]
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime == dt.timedelta(days=365, seconds=60)
    assert sorted(path.name for path in (tmp_path / "ca").iterdir()) == PLUG_IN_FILES + CLIENT_FILES


def test_the_private_key_is_not_in_repr_or_str(ca: CertificateAuthority, tmp_path: Path) -> None:
    key_pem = (tmp_path / "ca" / "ca-key.pem").read_bytes()
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    secret = key.private_numbers().private_value

    for text in (repr(ca), str(ca)):
        assert text == (
            "CertificateAuthority(subject='CN=Gossamer mesh root CA,O=Gossamer', "
            "trust_domain='cluster.local')"
        )
        assert str(secret) not in text


def test_spiffe_ids_follow_the_istio_form() -> None:
    assert spiffe_id("cluster.local", "shop", "web") == WEB
    with pytest.raises(ValueError, match="namespace 'a/b' cannot be part of a SPIFFE id"):
        spiffe_id("cluster.local", "a/b", "web")
    with pytest.raises(ValueError, match="is not a SPIFFE trust domain"):
        spiffe_id("Cluster.Local", "shop", "web")
