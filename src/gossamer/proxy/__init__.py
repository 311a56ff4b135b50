"""The data plane engine: listeners, HTTP/1.1, routing, load balancing, resilience, telemetry."""

# Before any hot-path module is imported: compiled or pure Python (see `native`).
from gossamer.proxy import native

native.select()

from gossamer.proxy.admin import AdminServer  # noqa: E402
from gossamer.proxy.server import Proxy  # noqa: E402

__all__ = ["AdminServer", "Proxy"]
