"""How a client knows it talks to the control plane: its TLS certificate, checked against the
mesh's roots before any token is sent.

The control plane serves its API and the proxies' streams over TLS with a certificate its own
CA signs, for the addresses it listens on and for its SPIFFE id (as istiod has one). A client
holds the mesh's trust bundle (`STATE/ca/trust-bundle.pem`, which `gossamer up` hands every
process it starts) and verifies the chain and the address: a process that took the control
plane's port cannot answer the handshake, so it never sees a token. Python's `ssl` alone, so
that proxies can use it without the `cryptography` package.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

CONTROL_PLANE_NAMESPACE = "gossamer-system"
CONTROL_PLANE_ACCOUNT = "control-plane"
TRUST_BUNDLE = "trust-bundle.pem"
"""In the CA folder: every root clients accept (the signing root, then any extra roots)."""


class UntrustedServerError(Exception):
    """A server did not prove it is the control plane; the message says what was wrong."""


def control_plane_spiffe_id(trust_domain: str = "cluster.local") -> str:
    """The control plane's own identity, in its API certificate beside the addresses."""
    return f"spiffe://{trust_domain}/ns/{CONTROL_PLANE_NAMESPACE}/sa/{CONTROL_PLANE_ACCOUNT}"


def client_context(ca_file: Path | str | None) -> ssl.SSLContext:
    """A context that verifies a server's chain and address against `ca_file` (the system's
    roots when None). OSError or ssl.SSLError when the file cannot be used."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def describe_failure(error: BaseException, server: str, ca_file: Path | str | None) -> str:
    """What a failed TLS handshake with the control plane means, for a person to read."""
    roots = f"the roots in {ca_file}" if ca_file is not None else "the system's roots"
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = error.verify_message or error.reason or str(error)
        return (
            f"{server} is not the control plane this client trusts: its certificate is not "
            f"verified by {roots} ({reason}); another process may hold the control plane's "
            "port. No token was sent."
        )
    reason = getattr(error, "reason", None) or str(error) or type(error).__name__
    return (
        f"{server} did not complete a TLS handshake verified by {roots} ({reason}); another "
        "process may hold the control plane's port, or it serves plain HTTP. No token was sent."
    )


def tls_failure(error: BaseException) -> ssl.SSLError | None:
    """The TLS error at the root of `error` (httpx and websockets wrap it), or None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


async def verify_control_plane(
    host: str, port: int, ca_file: Path | str, *, spiffe: str, timeout_s: float = 1.0
) -> None:
    """Complete a verified handshake with the server at host:port and check that its
    certificate names `spiffe`; UntrustedServerError says what did not hold. Sends nothing."""
    context = client_context(ca_file)
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
    except (ssl.SSLError, OSError, TimeoutError) as error:
        raise UntrustedServerError(describe_failure(error, f"{host}:{port}", ca_file)) from None
    try:
        certificate = writer.get_extra_info("peercert") or {}
        names = [value for kind, value in certificate.get("subjectAltName", ()) if kind == "URI"]
        if spiffe not in names:
            raise UntrustedServerError(
                f"{host}:{port} has a mesh certificate, but for {', '.join(names) or 'no id'}, "
                f"not {spiffe}"
            )
    finally:
        writer.close()
