"""The data plane engine: listeners, HTTP/1.1, routing, load balancing, resilience, telemetry."""

from gossamer.proxy.admin import AdminServer
from gossamer.proxy.server import Proxy

__all__ = ["AdminServer", "Proxy"]
