"""The frontend: asks the greeter through the mesh (`http://greeter/...`) and shows the answer.

The standard library's urllib honours HTTP_PROXY, which `gossamer up` points at this
workload's sidecar: the sidecar resolves `greeter`, picks v1 or v2 as the VirtualService says,
retries, and reports metrics. The app knows nothing of the mesh.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from hello.serving import serve

GREETER = os.environ.get("GREETER_URL", "http://greeter")


def page(path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
    if path != "/":
        return 404, {"error": f"no such page: {path}"}
    name = query.get("name", ["world"])[0]
    try:
        with urllib.request.urlopen(f"{GREETER}/greet?name={quote(name)}", timeout=5) as answer:
            greeting = json.load(answer)
    except urllib.error.HTTPError as error:
        return 502, {"error": f"the greeter answered {error.code}"}
    except OSError as error:
        return 502, {"error": f"the greeter cannot be reached: {error}"}
    return 200, {"message": greeting["greeting"], "greeter": greeting["version"]}


if __name__ == "__main__":
    serve("frontend", page)
