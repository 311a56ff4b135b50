"""SPIFFE ids and the TLS contexts of mesh mTLS, on Python's ssl alone.

A proxy needs these on every mTLS connection; the `cryptography` package (keys, CSRs, the CA)
costs a proxy process about 16 MB, so it lives in `ca` and `identity`, which only the control
plane and the moment a proxy makes its key load.
"""

from __future__ import annotations

import ssl
import string
from collections.abc import Mapping, Sequence
from pathlib import Path

SPIFFE_SCHEME = "spiffe://"

# Mesh traffic is HTTP/1.1 only; offering exactly that keeps both ends from guessing.
_ALPN = ["http/1.1"]

# SPIFFE ids: the trust domain is lowercase letters, digits, '.', '-', '_'; path segments may
# also hold uppercase letters. Kubernetes names are narrower still, so this refuses nothing real.
_TRUST_DOMAIN_CHARACTERS = frozenset(string.ascii_lowercase + string.digits + ".-_")
_SEGMENT_CHARACTERS = frozenset(string.ascii_letters + string.digits + ".-_")


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """The SPIFFE id of a service account: `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT`.

    Raises ValueError for names that would not make a valid SPIFFE id (empty, '/', '..').
    """
    check_trust_domain(trust_domain)
    for what, segment in (("namespace", namespace), ("service account", service_account)):
        if not segment or segment in {".", ".."} or not set(segment) <= _SEGMENT_CHARACTERS:
            raise ValueError(f"{what} {segment!r} cannot be part of a SPIFFE id")
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def check_trust_domain(trust_domain: str) -> None:
    """Raise ValueError unless `trust_domain` can be a SPIFFE trust domain."""
    if not trust_domain or not set(trust_domain) <= _TRUST_DOMAIN_CHARACTERS:
        raise ValueError(f"{trust_domain!r} is not a SPIFFE trust domain (like cluster.local)")


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
