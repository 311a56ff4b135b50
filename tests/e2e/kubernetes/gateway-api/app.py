"""The app of the Gateway API test folder: it says which version it is and which headers it got,
and `/call/NAME` calls service NAME through its sidecar (HTTP_PROXY) and returns the answer."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROLE = sys.argv[1]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/call/"):
            target = self.path.removeprefix("/call/")
            with urllib.request.urlopen(f"http://{target}/", timeout=10) as response:
                body: object = {"role": ROLE, "called": json.loads(response.read())}
        else:
            body = {
                "role": ROLE,
                "path": self.path,
                "x-gateway": self.headers.get("x-gateway"),
            }
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
