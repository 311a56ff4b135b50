"""A stand-in for the containers of the Kubernetes-shaped test folders: it tells what its
environment and mounted files hold, answers as bookinfo's services do, runs as a Job, (role
`banner`) speaks a line-based TCP protocol in which the server speaks first, as SMTP does, or
(role `tls`) answers over HTTPS with the tls.crt and tls.key of its working folder."""

from __future__ import annotations

import json
import os
import socketserver
import ssl
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROLE = sys.argv[1] if len(sys.argv) > 1 else "echo"
CALLS = {
    "productpage": ("http://details:9080/details/0", "http://reviews:9080/reviews/0"),
    "reviews-v2": ("http://ratings:9080/ratings/0",),
    "reviews-v3": ("http://ratings:9080/ratings/0",),
}


def call(url: str) -> object:
    # urllib goes through HTTP_PROXY, the sidecar, as a pod's traffic goes through Envoy.
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if parts[0] == "env":
            body: object = {name: os.environ.get(name) for name in parts[1:]}
        elif parts[0] == "file":
            body = (Path(os.environ[parts[1]]) / "/".join(parts[2:])).read_text()
        else:
            body = {
                "role": ROLE,
                "pod": os.environ.get("HOSTNAME"),
                "calls": [call(url) for url in CALLS.get(ROLE, ())],
            }
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Banner(socketserver.StreamRequestHandler):
    """Greets before the client says anything, then answers each line."""

    def handle(self) -> None:
        self.wfile.write(f"220 {os.environ.get('HOSTNAME')} ready\r\n".encode())
        for line in self.rfile:
            self.wfile.write(b"250 " + line)


def job() -> int:
    """Fail the first run, succeed the next: the restart policy shows in `status`."""
    marker = Path(os.environ["GOSSAMER_DATA"]) / f"{os.environ['HOSTNAME']}.ran"
    if not marker.exists():
        marker.write_text("once")
        return 1
    return 0


if __name__ == "__main__":
    if ROLE == "job":
        sys.exit(job())
    if ROLE == "tls":
        server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain("tls.crt", "tls.key")
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.serve_forever()
    if ROLE == "banner":
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        with socketserver.ThreadingTCPServer(("127.0.0.1", int(os.environ["PORT"])), Banner) as s:
            s.serve_forever()
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
