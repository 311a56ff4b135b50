"""Listening sockets bound by the proxy itself rather than by the event loop."""

from __future__ import annotations

import socket


def listening_socket(address: str, port: int, backlog: int = 1024) -> socket.socket:
    """A non-blocking TCP socket bound to `address` (an IP address) and listening.

    uvloop's `create_server` passes every host through the `idna` codec, whose first use loads
    `encodings.idna`, `stringprep` and `unicodedata`: 0.45 MB for each proxy. The socket module
    takes an ASCII address as it is.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.create_server((address, port), family=family, backlog=backlog)
    sock.setblocking(False)
    return sock
