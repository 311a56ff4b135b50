"""TLS termination on a listener: one SSL context per certificate, chosen by the client's SNI.

Contexts are built when a snapshot is applied (a missing or bad file rejects the snapshot, so
the proxy keeps its last good one); the listener's socket is not rebound when certificates
change: the SNI callback reads the current table at each handshake.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

from gossamer.proxy.memory import keep_tls_buffers_on_heap
from gossamer.snapshot import SnapshotError
from gossamer.snapshot.model import Certificate, ListenerTls

ALPN = ["h2", "http/1.1"]
"""What a TLS listener offers: HTTP/2 to the clients that ask for it (http2_connection.py)."""


class ServerCertificates:
    """The contexts of one listener's certificates, and which serves a given server name."""

    def __init__(self, tls: ListenerTls) -> None:
        assert tls.certificates, "TLS needs a certificate"
        self.entries = [(_hosts(c), _context(c)) for c in tls.certificates]
        self.default = self.entries[0][1]
        self.default_certificate = tls.certificates[0]

    def __repr__(self) -> str:
        return f"<ServerCertificates {len(self.entries)}>"

    def for_name(self, server_name: str | None) -> ssl.SSLContext:
        """The context for an SNI name: an exact host, then the longest wildcard, then the first."""
        if server_name:
            name = server_name.lower()
            wildcard: tuple[int, ssl.SSLContext] | None = None
            for hosts, context in self.entries:
                for host in hosts:
                    if host == name:
                        return context
                    longer = wildcard is None or len(host) > wildcard[0]
                    if host.startswith("*.") and name.endswith(host[1:]) and longer:
                        wildcard = (len(host), context)
            if wildcard is not None:
                return wildcard[1]
        return self.default


def listening_context(
    current: ServerCertificates,
) -> tuple[ssl.SSLContext, list[ServerCertificates]]:
    """The context a server socket is created with, and the slot its SNI callback reads.

    Replacing `slot[0]` switches certificates for new handshakes without rebinding.
    """
    keep_tls_buffers_on_heap()
    slot = [current]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN)
    first = current.default_certificate
    context.load_cert_chain(first.cert_file, first.key_file)

    def choose(connection: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        connection.context = slot[0].for_name(name)

    context.sni_callback = choose
    return context, slot


def _context(certificate: Certificate) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN)
    try:
        context.load_cert_chain(certificate.cert_file, certificate.key_file)
    except (OSError, ssl.SSLError) as error:
        raise SnapshotError(
            f"certificate {certificate.cert_file} / {certificate.key_file}: {error}"
        ) from None
    return context


def _hosts(certificate: Certificate) -> Sequence[str]:
    return [host.lower() for host in certificate.hosts]
