"""A small JSON HTTP server on the standard library: where the app listens, and clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Handler = Callable[[str, dict[str, list[str]]], tuple[int, dict[str, Any]]]


def serve(name: str, handle: Handler) -> None:
    """Answer GET requests with `handle(path, query)` on 127.0.0.1:$PORT until SIGTERM."""
    port = int(os.environ.get("PORT", "8080"))

    class Request(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The head and the body leave in one send, and without waiting for an ACK: unbuffered,
        # they were two sends, and Nagle's algorithm held the body until the client's delayed
        # ACK of the head (40 ms per keep-alive request on Linux).
        wbufsize = 64 * 1024
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/healthz":
                status, body = 200, {"ok": True}
            else:
                status, body = handle(parts.path, parse_qs(parts.query))
            data = json.dumps(body).encode() + b"\n"
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"{name}: {format % args}\n")

    server = ThreadingHTTPServer(("127.0.0.1", port), Request)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.stderr.write(f"{name} listening on 127.0.0.1:{port}\n")
    server.serve_forever()
