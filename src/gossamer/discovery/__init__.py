"""Service discovery by DNS: *.svc.cluster.local answered from the mesh's registry."""

from gossamer.discovery.directory import MemoryDirectory, PortRecord, ServiceRecord
from gossamer.discovery.resolver import DnsConfig, answer
from gossamer.discovery.server import DnsServer

__all__ = ["DnsConfig", "DnsServer", "MemoryDirectory", "PortRecord", "ServiceRecord", "answer"]
