"""The mesh certificate authority: a root, made or supplied, that signs workload certificates."""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gossamer.security.files import make_private_directory, write_file_atomically
from gossamer.security.identity import CLOCK_SKEW, check_issuing_order
from gossamer.security.spiffe import check_trust_domain, spiffe_id
from gossamer.security.trust import TRUST_BUNDLE

MIN_LIFETIME_S = 60.0
ROOT_VALIDITY = dt.timedelta(days=3650)
SERVER_VALIDITY = dt.timedelta(days=365)
MIN_RSA_BITS = 2048

# Istio's plug-in CA layout, so an operator can drop in the files they already have.
CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
ROOT_CERT = "root-cert.pem"
CERT_CHAIN = "cert-chain.pem"
EXTRA_ROOTS = "extra-roots.pem"

_ACCEPTED_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


class CertificateRequestError(ValueError):
    """A certificate signing request the CA will not sign; the message says why."""


class CertificateAuthority:
    """Signs workload certificates for one trust domain with a signing key on local disk.

    The signing certificate is either a self-signed root made on first start or an
    operator's intermediate; `roots` are the trust anchors proxies are given, the first
    being the root of the signing chain and the rest extra anchors kept during a rotation.
    """

    __slots__ = ("_chain", "_key", "lifetime_s", "roots", "trust_domain")

    def __init__(
        self,
        *,
        signing_key: CertificateIssuerPrivateKeyTypes,
        chain: Sequence[x509.Certificate],
        roots: Sequence[x509.Certificate],
        trust_domain: str,
        lifetime_s: float,
    ) -> None:
        """Use `signing_key` and `chain` (signing certificate first, root excluded).

        Prefer `load_or_create`, which reads these from a directory and checks them.
        """
        check_trust_domain(trust_domain)
        _check_lifetime(lifetime_s)
        if not chain or not roots:
            raise ValueError("a CA needs a signing certificate and at least one root")
        self._key = signing_key
        self._chain = tuple(chain)
        self.roots: tuple[str, ...] = tuple(_pem(root) for root in roots)
        self.trust_domain = trust_domain
        self.lifetime_s = lifetime_s

    @classmethod
    def load_or_create(
        cls,
        directory: Path,
        trust_domain: str = "cluster.local",
        *,
        lifetime_s: float = 86400.0,
    ) -> CertificateAuthority:
        """The CA whose files are in `directory`, creating a new self-signed root if none.

        An operator's `ca-cert.pem` + `ca-key.pem` (with `root-cert.pem` and `cert-chain.pem`
        when ca-cert is an intermediate) are used as they are and never rewritten. Otherwise
        a root is made and all four files are written, the key 0600 in a 0700 directory.
        `extra-roots.pem`, when present, adds trust anchors (for example the next root).
        `trust-bundle.pem` is (re)written with every root: the file clients verify the
        control plane with.
        """
        check_trust_domain(trust_domain)
        _check_lifetime(lifetime_s)
        make_private_directory(directory)
        cert_path, key_path = directory / CA_CERT, directory / CA_KEY
        if cert_path.exists() or key_path.exists():
            key, chain, root = _load_signing_files(directory)
        else:
            key, chain, root = _create_root(directory)
        roots = _deduplicated([root, *_load_extra_roots(directory / EXTRA_ROOTS)])
        _write_trust_bundle(directory / TRUST_BUNDLE, roots)
        return cls(
            signing_key=key,
            chain=chain,
            roots=roots,
            trust_domain=trust_domain,
            lifetime_s=lifetime_s,
        )

    def sign(
        self,
        csr_pem: str | bytes,
        *,
        namespace: str,
        service_account: str,
        lifetime_s: float | None = None,
    ) -> str:
        """Issue a workload certificate for the service account the caller authenticated.

        The CSR must be validly self-signed and ask for exactly one name, the URI
        `spiffe_id(trust_domain, namespace, service_account)`; anything else raises
        CertificateRequestError. Returns PEM: the leaf, then the signing chain without the
        root (roots are distributed separately, as trust anchors).
        """
        lifetime = self.lifetime_s if lifetime_s is None else lifetime_s
        _check_lifetime(lifetime)
        try:
            expected = spiffe_id(self.trust_domain, namespace, service_account)
        except ValueError as exc:
            raise CertificateRequestError(str(exc)) from exc
        request = _parse_csr(csr_pem)
        _check_csr_key(request.public_key())
        _check_csr_names(request, expected)
        leaf = self._issue(
            x509.Name([]),
            request.public_key(),
            lifetime=dt.timedelta(seconds=lifetime),
            extensions=[
                # SPIFFE X.509-SVID: with an empty subject, the SAN carries the identity and
                # RFC 5280 requires it critical (OpenSSL's strict mode checks that).
                (x509.SubjectAlternativeName([x509.UniformResourceIdentifier(expected)]), True),
                (_key_usage(key_encipherment=True), True),
                (
                    x509.ExtendedKeyUsage(
                        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                    ),
                    False,
                ),
            ],
        )
        return self._chain_pem(leaf)

    def issue_server_certificate(
        self, hosts: Sequence[str], uris: Sequence[str] = ()
    ) -> tuple[str, str]:
        """A (chain PEM, key PEM) pair for a server reached by name, such as the control plane.

        Each host is a DNS name, or an IP address (v4 or v6) which goes in as an IP SAN; each
        of `uris` (the server's SPIFFE id) goes in as a URI SAN.
        The certificate is valid for 365 days (or until the signing certificate expires) and
        for serverAuth only. The new key is returned, never written to disk here.
        """
        if not hosts:
            raise ValueError("a server certificate needs at least one host name or address")
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = self._issue(
            x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Gossamer")]),
            key.public_key(),
            lifetime=SERVER_VALIDITY,
            extensions=[
                (
                    x509.SubjectAlternativeName(
                        [_host_name(host) for host in hosts]
                        + [x509.UniformResourceIdentifier(uri) for uri in uris]
                    ),
                    False,
                ),
                (_key_usage(key_encipherment=False), True),
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            ],
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return self._chain_pem(leaf), key_pem.decode("ascii")

    def _issue(
        self,
        subject: x509.Name,
        public_key: CertificatePublicKeyTypes,
        *,
        lifetime: dt.timedelta,
        extensions: Sequence[tuple[x509.ExtensionType, bool]],
    ) -> x509.Certificate:
        signer = self._chain[0]
        now = _now()
        not_after = min(now + lifetime, signer.not_valid_after_utc)
        if not_after <= now:
            raise ValueError(
                f"the CA's signing certificate expired at {signer.not_valid_after_utc.isoformat()}"
            )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(signer.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(self._authority_key_identifier(), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(self._key, _signature_hash(self._key))

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        try:
            extension = self._chain[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except x509.ExtensionNotFound:
            # An operator's CA without SKI: derive the identifier the usual way, from the key.
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(extension.value)

    def _chain_pem(self, leaf: x509.Certificate) -> str:
        return "".join(_pem(certificate) for certificate in (leaf, *self._chain))

    def __repr__(self) -> str:
        subject = self._chain[0].subject.rfc4514_string()
        return f"CertificateAuthority(subject={subject!r}, trust_domain={self.trust_domain!r})"


def _create_root(
    directory: Path,
) -> tuple[CertificateIssuerPrivateKeyTypes, list[x509.Certificate], x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Gossamer"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Gossamer mesh root CA"),
        ]
    )
    identifier = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    now = _now()
    root = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + ROOT_VALIDITY)
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
        .add_extension(identifier, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(identifier),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    root_pem = root.public_bytes(serialization.Encoding.PEM)
    # ca-cert.pem goes last: its presence is what marks the directory as holding a CA.
    write_file_atomically(directory / ROOT_CERT, root_pem, 0o644)
    write_file_atomically(directory / CERT_CHAIN, root_pem, 0o644)
    write_file_atomically(directory / CA_KEY, key_pem, 0o600)
    write_file_atomically(directory / CA_CERT, root_pem, 0o644)
    return key, [root], root


def _load_signing_files(
    directory: Path,
) -> tuple[CertificateIssuerPrivateKeyTypes, list[x509.Certificate], x509.Certificate]:
    """Read and cross-check an existing CA: (signing key, chain without root, root)."""
    for name in (CA_CERT, CA_KEY):
        if not (directory / name).exists():
            raise ValueError(
                f"{directory} has {CA_KEY if name == CA_CERT else CA_CERT} but no {name}; "
                "supply both, or neither to have a new root made"
            )
    signing_cert = _read_certificates(directory / CA_CERT)[0]
    key = _read_signing_key(directory / CA_KEY)
    if key.public_key() != signing_cert.public_key():
        raise ValueError(f"{directory / CA_KEY} is not the key of {directory / CA_CERT}")
    _check_is_ca(signing_cert, directory / CA_CERT)
    self_signed = signing_cert.issuer == signing_cert.subject
    root_path = directory / ROOT_CERT
    if root_path.exists():
        root = _read_certificates(root_path)[0]
    elif self_signed:
        root = signing_cert
    else:
        raise ValueError(f"{directory / CA_CERT} is an intermediate; {root_path} is needed too")
    chain_path = directory / CERT_CHAIN
    chain = _read_certificates(chain_path) if chain_path.exists() else [signing_cert]
    if chain[0] != signing_cert:
        raise ValueError(f"{chain_path} must begin with the certificate in {CA_CERT}")
    # The signing certificate is always sent, even when it is the root itself; the rest of
    # the chain is sent up to, not including, the root.
    chain = [signing_cert, *(certificate for certificate in chain[1:] if certificate != root)]
    if signing_cert != root:
        try:
            check_issuing_order([*chain, root])
        except ValueError as exc:
            raise ValueError(
                f"in {directory}, {exc}: the chain does not reach {ROOT_CERT}"
            ) from exc
    return key, chain, root


def _read_certificates(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path} holds no readable PEM certificate: {exc}") from exc


def _read_signing_key(path: Path) -> CertificateIssuerPrivateKeyTypes:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        # The exception text never includes key material, only what is wrong with the file.
        raise ValueError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(
        key,
        ec.EllipticCurvePrivateKey
        | rsa.RSAPrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        raise ValueError(f"{path} holds a {type(key).__name__}; use an EC, RSA or EdDSA key")
    return key


def _load_extra_roots(path: Path) -> list[x509.Certificate]:
    if not path.exists():
        return []
    roots = _read_certificates(path)
    for root in roots:
        _check_is_ca(root, path)
    return roots


def _write_trust_bundle(path: Path, roots: Sequence[x509.Certificate]) -> None:
    bundle = "".join(_pem(root) for root in roots).encode("ascii")
    try:
        if path.read_bytes() == bundle:
            return
    except FileNotFoundError:
        pass
    write_file_atomically(path, bundle, 0o644)


def _check_is_ca(certificate: x509.Certificate, source: Path) -> None:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.value.ca:
        raise ValueError(
            f"{certificate.subject.rfc4514_string()} in {source} is not a CA certificate "
            "(basicConstraints CA:TRUE)"
        )


def _deduplicated(certificates: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    unique: list[x509.Certificate] = []
    for certificate in certificates:
        if certificate not in unique:
            unique.append(certificate)
    return unique


def _parse_csr(csr_pem: str | bytes) -> x509.CertificateSigningRequest:
    data = csr_pem.encode("ascii") if isinstance(csr_pem, str) else csr_pem
    try:
        request = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise CertificateRequestError(f"the CSR is not a PEM certificate request: {exc}") from exc
    if not request.is_signature_valid:
        raise CertificateRequestError(
            "the CSR's signature does not match its contents (altered, or signed by another key)"
        )
    return request


def _check_csr_key(key: CertificatePublicKeyTypes) -> None:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CertificateRequestError(
                f"the CSR's RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are needed"
            )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _ACCEPTED_CURVES):
            raise CertificateRequestError(
                f"the CSR's key is on curve {key.curve.name}; use P-256, P-384 or P-521"
            )
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise CertificateRequestError(
            f"the CSR's key is a {type(key).__name__}; use ECDSA P-256, RSA or Ed25519"
        )


def _check_csr_names(request: x509.CertificateSigningRequest, expected: str) -> None:
    try:
        names = list(request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        names = []
    except ValueError as exc:  # e.g. the same extension twice
        raise CertificateRequestError(f"the CSR's extensions cannot be read: {exc}") from exc
    others = [name for name in names if not isinstance(name, x509.UniformResourceIdentifier)]
    if others:
        shown = ", ".join(_describe(name) for name in others)
        raise CertificateRequestError(
            f"the CSR asks for {shown}; a workload certificate names only {expected}"
        )
    uris = [name.value for name in names if isinstance(name, x509.UniformResourceIdentifier)]
    if len(uris) != 1:
        asked = ", ".join(uris) or "no URI"
        raise CertificateRequestError(
            f"the CSR asks for {asked}; it must ask for exactly one URI, {expected}"
        )
    if uris[0] != expected:
        raise CertificateRequestError(
            f"the CSR asks for {uris[0]} but the requester is authenticated as {expected}"
        )


def _describe(name: x509.GeneralName) -> str:
    kinds = {
        x509.DNSName: "DNS name",
        x509.IPAddress: "IP address",
        x509.RFC822Name: "email address",
        x509.DirectoryName: "directory name",
    }
    return f"{kinds.get(type(name), type(name).__name__)} {name.value}"


def _host_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _key_usage(*, key_encipherment: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _signature_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    # EdDSA signs the message itself; the other algorithms sign its SHA-256 digest.
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _check_lifetime(lifetime_s: float) -> None:
    if not math.isfinite(lifetime_s) or lifetime_s < MIN_LIFETIME_S:
        raise ValueError(
            f"a certificate lifetime of {lifetime_s} s is too short; the minimum is "
            f"{MIN_LIFETIME_S:.0f} s"
        )


def _now() -> dt.datetime:
    # Certificates hold whole seconds; truncating keeps notBefore/notAfter exactly as computed.
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
