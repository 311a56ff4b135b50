"""The greeter: says hello, in the words of its version (v1 "Hello", v2 "Howdy")."""

from __future__ import annotations

import os
import socket
from typing import Any

from hello.serving import serve

WORDS = {"v1": "Hello", "v2": "Howdy"}
VERSION = os.environ.get("GREETER_VERSION", "v1")


def greet(path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
    if path != "/greet":
        return 404, {"error": f"no such page: {path}"}
    name = query.get("name", ["world"])[0]
    return 200, {
        "greeting": f"{WORDS.get(VERSION, 'Hello')}, {name}!",
        "version": VERSION,
        "instance": f"{socket.gethostname()}:{os.environ.get('PORT', '')}",
    }


if __name__ == "__main__":
    serve(f"greeter-{VERSION}", greet)
