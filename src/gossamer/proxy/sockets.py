"""Listening sockets bound by the proxy itself rather than by the event loop."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Callable

REUSE_PORT_ENV = "GOSSAMER_REUSE_PORT"
"""Set to 1 by `gossamer proxy --workers N` in each worker's environment."""


def listening_socket(address: str, port: int, backlog: int = 1024) -> socket.socket:
    """A non-blocking TCP socket bound to `address` (an IP address) and listening.

    uvloop's `create_server` passes every host through the `idna` codec, whose first use loads
    `encodings.idna`, `stringprep` and `unicodedata`: 0.45 MB for each proxy. The socket module
    takes an ASCII address as it is.

    A worker of `gossamer proxy --workers N` (gossamer.proxy.workers) binds with SO_REUSEPORT,
    so that its siblings share the port. The parent says so in the worker's environment rather
    than through the proxy's objects: the hot path (server.py, compiled) stays as it is.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    reuse_port = os.environ.get(REUSE_PORT_ENV) == "1"
    sock = socket.create_server(
        (address, port), family=family, backlog=backlog, reuse_port=reuse_port
    )
    sock.setblocking(False)
    return sock


async def serve(
    factory: Callable[[], asyncio.BaseProtocol],
    address: str,
    port: int,
    *,
    backlog: int = 1024,
    context: ssl.SSLContext | None = None,
) -> asyncio.Server:
    """An event-loop server on a `listening_socket` (closed again if the server cannot start)."""
    sock = listening_socket(address, port, backlog)
    try:
        return await asyncio.get_running_loop().create_server(factory, sock=sock, ssl=context)
    except BaseException:
        sock.close()
        raise
