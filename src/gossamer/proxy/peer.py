"""Peer metadata: who the calling workload is, told by its sidecar to the callee's.

Istio's sidecars exchange a `x-envoy-peer-metadata` header so that the callee's metrics name the
source workload, which mTLS alone does not prove (a certificate names a service account, which
many workloads may share). A Gossamer sidecar or gateway adds `x-gossamer-peer` to the requests
it sends to endpoints of the mesh (those it reaches over mTLS): `workload=W,namespace=N,app=A,
version=V`. Every proxy drops the header from what it received; an inbound listener reads it
first, and believes it only from a caller whose certificate has the same namespace.
"""

from __future__ import annotations

from gossamer.snapshot.model import Node

HEADER = b"x-gossamer-peer"

MAX_PEERS = 256
"""Distinct metadata values one listener turns into metric labels; past it, a caller's own
workload is "unknown" (a workload that made up names must not grow the series without end)."""

_FIELDS = ("workload", "namespace", "app", "version")


def header_value(node: Node) -> bytes:
    """What this proxy says of its workload."""
    values = (node.workload, node.namespace, node.service, node.version)
    return ",".join(f"{name}={value}" for name, value in zip(_FIELDS, values, strict=True)).encode(
        "latin-1"
    )


def source_labels(value: bytes, namespace: str) -> tuple[str, str, str] | None:
    """(workload, app, version) the header names, if it parses and names `namespace` (the one
    the caller's certificate proves); None otherwise."""
    fields: dict[str, str] = {}
    for part in value.decode("latin-1").split(","):
        name, sep, found = part.strip().partition("=")
        if sep and name in _FIELDS and found and len(found) <= 253:
            fields[name] = found
    if fields.get("namespace") != namespace or "workload" not in fields:
        return None
    return fields["workload"], fields.get("app", "unknown"), fields.get("version", "unknown")
