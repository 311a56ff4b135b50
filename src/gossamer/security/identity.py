"""A workload's mesh identity: its own key, its SPIFFE certificate, and the mTLS contexts."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gossamer.security.files import make_private_directory, write_file_atomically
from gossamer.security.spiffe import SPIFFE_SCHEME

# Peers' clocks may run a little behind the CA's; a certificate valid "from now" would be
# refused by them for that long, so the CA back-dates notBefore by this much.
CLOCK_SKEW = dt.timedelta(seconds=60)


class WorkloadIdentity:
    """A private key made on this host and the certificate chain the mesh CA issued for it.

    The key never leaves the process except through `write`, which the proxy needs because
    `ssl.SSLContext.load_cert_chain` only reads files. Renewal makes a new key: `renewal()`
    returns a fresh identity for the same SPIFFE id, so the current one keeps serving until
    the new certificate has been accepted and the caller swaps the two.
    """

    __slots__ = ("_chain", "_key", "_leaf", "spiffe")

    def __init__(self, spiffe: str, key: ec.EllipticCurvePrivateKey) -> None:
        if not spiffe.startswith(SPIFFE_SCHEME):
            raise ValueError(f"a workload identity is a spiffe:// URI, not {spiffe!r}")
        self.spiffe = spiffe
        self._key = key
        self._chain = ""
        self._leaf: x509.Certificate | None = None

    @classmethod
    def create(cls, spiffe: str) -> WorkloadIdentity:
        """A new identity with a freshly generated ECDSA P-256 key and no certificate yet."""
        return cls(spiffe, ec.generate_private_key(ec.SECP256R1()))

    def renewal(self) -> WorkloadIdentity:
        """The identity to renew with: same SPIFFE id, a new key, no certificate yet.

        A renewal never reuses the key, so a key that leaked stops being useful at the next
        rotation; this identity stays usable until the caller replaces it.
        """
        return WorkloadIdentity.create(self.spiffe)

    def csr(self) -> str:
        """A PEM certificate signing request for this key, asking for the SPIFFE id only."""
        request = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(self.spiffe)]),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        return request.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def accept(self, chain_pem: str) -> None:
        """Keep `chain_pem` (leaf first) after checking it was issued for this key and id.

        Raises ValueError when the leaf holds another public key, names another SPIFFE id,
        has already expired, or when the chain is not in issuing order (each certificate
        signed by the next), which TLS peers would otherwise reject much later.
        """
        try:
            certificates = x509.load_pem_x509_certificates(chain_pem.encode("ascii"))
        except ValueError as exc:
            raise ValueError(f"the certificate chain is not PEM certificates: {exc}") from exc
        leaf = certificates[0]
        if leaf.public_key() != self._key.public_key():
            raise ValueError("the certificate was issued for another key, not this identity's")
        names = _uri_sans(leaf)
        if names != [self.spiffe]:
            shown = ", ".join(names) or "no URI"
            raise ValueError(f"the certificate is for {shown}, not {self.spiffe}")
        if leaf.not_valid_after_utc <= dt.datetime.now(dt.UTC):
            raise ValueError(f"the certificate expired at {leaf.not_valid_after_utc.isoformat()}")
        check_issuing_order(certificates)
        self._leaf = leaf
        self._chain = chain_pem

    @property
    def chain_pem(self) -> str:
        """The accepted certificate chain, leaf first, as PEM text."""
        return self._chain

    @property
    def not_after(self) -> dt.datetime:
        """When the accepted leaf certificate expires (UTC)."""
        return self._accepted_leaf().not_valid_after_utc

    def renew_at(self) -> float:
        """The `time.time()` at which to renew: half the leaf's lifetime from its issue.

        Half leaves as much time again for retries if the control plane is unreachable. The
        life counts from issue (notBefore plus the back-dating), not from notBefore.
        """
        leaf = self._accepted_leaf()
        start = leaf.not_valid_before_utc + CLOCK_SKEW
        return (start + (leaf.not_valid_after_utc - start) / 2).timestamp()

    def write_key(self, path: Path) -> None:
        """Write the private key alone (PKCS#8 PEM, mode 0600, replaced atomically)."""
        make_private_directory(path.parent)
        key_pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_file_atomically(path, key_pem, 0o600)

    def write(self, directory: Path) -> tuple[Path, Path]:
        """Write `cert-chain.pem` and `key.pem` (mode 0600) into `directory`.

        Each file is replaced atomically, so a reader never sees half of one; the two are not
        replaced as a pair, so the process that writes them should be the one that loads them.
        Returns (certificate chain path, key path).
        """
        if not self._chain:
            raise RuntimeError(f"{self.spiffe} has no certificate yet; accept() one first")
        make_private_directory(directory)
        key_pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        cert_path = directory / "cert-chain.pem"
        key_path = directory / "key.pem"
        write_file_atomically(key_path, key_pem, 0o600)
        write_file_atomically(cert_path, self._chain.encode("ascii"), 0o644)
        return cert_path, key_path

    def _accepted_leaf(self) -> x509.Certificate:
        if self._leaf is None:
            raise RuntimeError(f"{self.spiffe} has no certificate yet; accept() one first")
        return self._leaf

    def __repr__(self) -> str:
        if self._leaf is None:
            return f"WorkloadIdentity({self.spiffe!r}, no certificate)"
        expiry = self._leaf.not_valid_after_utc.isoformat()
        return f"WorkloadIdentity({self.spiffe!r}, not_after={expiry})"


def _uri_sans(certificate: x509.Certificate) -> list[str]:
    """The URI entries of a certificate's subjectAltName, in order ([] without one)."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return extension.value.get_values_for_type(x509.UniformResourceIdentifier)


def check_issuing_order(certificates: Sequence[x509.Certificate]) -> None:
    """Raise ValueError unless each certificate is signed by the one after it.

    TLS peers send and verify chains in this order; checking it where a chain is stored
    turns a handshake failure much later into an error that names the culprit.
    """
    for child, parent in itertools.pairwise(certificates):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise ValueError(
                f"{child.subject.rfc4514_string() or 'the leaf'} is not issued by "
                f"{parent.subject.rfc4514_string()}"
            ) from exc
