"""A workload's mesh identity: its own key, its SPIFFE certificate, and the mTLS contexts."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SPIFFE_SCHEME = "spiffe://"

# Mesh traffic is HTTP/1.1 only; offering exactly that keeps both ends from guessing.
_ALPN = ["http/1.1"]


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
        """The `time.time()` at which to renew: half the leaf's lifetime after notBefore.

        Half leaves as much time again for retries if the control plane is unreachable.
        """
        leaf = self._accepted_leaf()
        start = leaf.not_valid_before_utc
        return (start + (leaf.not_valid_after_utc - start) / 2).timestamp()

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


def peer_spiffe_id(peercert: Mapping[str, object] | None) -> str:
    """The peer's SPIFFE id from `SSLSocket.getpeercert()`'s dict, or "" when it has none.

    Only a verified certificate's dict is non-empty, so "" also means "not authenticated".
    """
    if not peercert:
        return ""
    names = peercert.get("subjectAltName", ())
    if not isinstance(names, tuple):
        return ""
    for entry in names:
        if (
            isinstance(entry, tuple)
            and len(entry) == 2
            and entry[0] == "URI"
            and isinstance(entry[1], str)
            and entry[1].startswith(SPIFFE_SCHEME)
        ):
            return entry[1]
    return ""


def principal_of(spiffe: str) -> str:
    """The Istio principal for a SPIFFE id (`cluster.local/ns/NS/sa/SA`); "" for ""."""
    return spiffe.removeprefix(SPIFFE_SCHEME)


def server_context(
    cert_file: str | Path,
    key_file: str | Path,
    roots: Sequence[str],
    *,
    require_client_cert: bool,
) -> ssl.SSLContext:
    """A TLS 1.3 server context for mesh traffic, trusting only the mesh's `roots`.

    With `require_client_cert` the handshake fails without a client certificate from those
    roots (STRICT mTLS); otherwise one is verified when offered (PERMISSIVE).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _configure(context, cert_file, key_file, roots)
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


def client_context(
    cert_file: str | Path, key_file: str | Path, roots: Sequence[str]
) -> ssl.SSLContext:
    """A TLS 1.3 client context for mesh traffic, presenting this workload's certificate.

    Host names are not checked: mesh peers are identified by SPIFFE id, so the caller
    compares `peer_spiffe_id` with the identity it expected.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    _configure(context, cert_file, key_file, roots)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _configure(
    context: ssl.SSLContext, cert_file: str | Path, key_file: str | Path, roots: Sequence[str]
) -> None:
    if not roots:
        raise ValueError("mesh TLS needs at least one trust anchor")
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # Python 3.13's default contexts verify strictly; doing so on every version means a
    # certificate that passes here also passes for clients built with create_default_context.
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(cadata="".join(roots))
    context.set_alpn_protocols(_ALPN)


def make_private_directory(directory: Path) -> None:
    """Create `directory` (and parents) with mode 0700; an existing one is left as it is."""
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if not directory.is_dir():
            raise
        return
    # mkdir's mode passes through the umask; make sure no group or other bit survived it.
    directory.chmod(0o700)


def write_file_atomically(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data` in one step, so readers see the old file or the new one.

    The temporary file is created 0600 by mkstemp and only then given `mode`, so a private
    key is never readable by others, not even for an instant.
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    staged = Path(temporary)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        staged.chmod(mode)
        staged.replace(path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    # Without this a power cut can lose the rename, e.g. a new CA key that certificates
    # were already issued from.
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            os.fsync(descriptor)
    finally:
        os.close(descriptor)
