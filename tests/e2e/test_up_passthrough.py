"""`gossamer up` with TLS passthrough at the ingress gateway: an Istio Gateway server in
PASSTHROUGH mode and a VirtualService `tls` route carry an HTTPS client's connection, by the
server name of its ClientHello, to an app that terminates its own TLS (through its sidecar, over
mTLS); a name no route takes is closed."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.component.proxy.certificates import self_signed
from tests.e2e.test_up_hello import gossamer
from tests.e2e.test_up_kubernetes import _mesh, _up

NAME = "shop.example.com"


@pytest.fixture
def passthrough(tmp_path: Path) -> Iterator[Path]:
    for folder in _mesh(tmp_path, "passthrough"):
        cert, key = self_signed(NAME, tmp_path / "certs")
        (folder / "tls.crt").write_bytes(cert.read_bytes())
        (folder / "tls.key").write_bytes(key.read_bytes())
        yield folder


def https_get(port: int, name: str, cafile: Path) -> bytes:
    """GET / over TLS to the gateway's passthrough port, asking for `name`; the answer's body."""
    context = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")), head
    return body


def test_tls_passes_through_the_gateway_to_the_app_by_sni(passthrough: Path) -> None:
    up = _up(passthrough)
    port = int(up["gateway_passthrough"].rsplit(":", 1)[1])
    cafile = passthrough / "tls.crt"
    deadline = time.monotonic() + 30
    while True:
        try:
            body = https_get(port, NAME, cafile)
            break
        except (OSError, AssertionError) as error:
            assert time.monotonic() < deadline, repr(error)
            time.sleep(0.3)
    # The app answered over its own TLS, its certificate checked by the client.
    assert json.loads(body)["role"] == "tls"
    with pytest.raises((ssl.SSLError, OSError)):
        https_get(port, "elsewhere.example.com", cafile)
    assert gossamer("down", cwd=passthrough).returncode == 0
