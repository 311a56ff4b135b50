"""The mesh side of one control-plane replica: mirror, distributor and registry together."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gossamer.control.api.catalog import Catalog
from gossamer.control.apikeys.leases import LeaseBook
from gossamer.control.auth import Principal, TokenRegistry, workload_principal
from gossamer.control.mesh.distributor import Distributor
from gossamer.control.mesh.gateway_status import GatewayStatus
from gossamer.control.mesh.mirror import StoreMirror
from gossamer.control.mesh.registry import LEASES, Registry
from gossamer.control.store import ObjectKey, ResourceType, Store
from gossamer.security.ca import CertificateAuthority, CertificateRequestError
from gossamer.security.spiffe import spiffe_id

WORKLOAD_TOKENS = ResourceType("gossamer.dev", "workloadtokens")


@dataclass(frozen=True, slots=True)
class MeshSettings:
    """How fast the mesh side reacts, and how long it waits for the departed."""

    debounce_s: float = 0.1
    """Quiet time after a change before recomputing; further changes restart it..."""
    max_delay_s: float = 1.0
    """...but never later than this after the first change."""
    instance_ttl_s: float = 30.0
    """A disconnected proxy's instance (or a dead replica's) is removed after this long."""
    restart_grace_s: float = 15.0
    """After starting, nothing is removed for this long: proxies reconnect within their
    longest backoff (2 s, jittered) plus a connection's open timeout (5 s)."""
    sync_timeout_s: float = 30.0
    """How long starting waits for the first full read of the store."""
    mtls: bool = True
    """Run the mesh CA: sidecars get SPIFFE certificates and talk mTLS to each other."""
    certificate_lifetime_s: float = 86400.0
    """How long a workload certificate is valid; proxies renew at half of it."""


def new_workload_token(namespace: str, workload: str) -> tuple[str, ObjectKey, dict[str, Any]]:
    """A fresh token for one workload, and the record (key, body) that makes it valid.

    The store keeps only the token's SHA-256; the token itself is shown once, to its owner.
    """
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    name = f"{workload[:50]}-{digest[:8]}"
    body = {
        "apiVersion": "gossamer.dev/v1alpha1",
        "kind": "WorkloadToken",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "spec": {"workload": workload, "sha256": digest},
    }
    return token, ObjectKey(WORKLOAD_TOKENS, namespace, name), body


def replica_name() -> str:
    """A name for this replica that another one on the same host will not have."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class Mesh:
    """Starts and stops the parts that turn stored resources into running proxies."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        tokens: TokenRegistry,
        settings: MeshSettings,
        url: str = "",
        *,
        ca: CertificateAuthority | None = None,
    ) -> None:
        self.replica = replica_name()
        self.tokens = tokens
        self.ca = ca
        self.mirror = StoreMirror(store, catalog)
        self.distributor = Distributor(
            self.mirror,
            self.replica,
            settings.debounce_s,
            settings.max_delay_s,
            roots=ca.roots if ca is not None else (),
            trust_domain=ca.trust_domain if ca is not None else "cluster.local",
        )
        self.leases = LeaseBook(self.mirror)
        """Shared budgets of API consumers, leased to gateways (control/apikeys/leases.py)."""
        self.registry = Registry(
            store,
            self.mirror,
            self.replica,
            url=url,
            ttl_s=settings.instance_ttl_s,
            grace_s=settings.restart_grace_s,
        )
        self.registry.status = self.distributor.status
        self.gateway_status = GatewayStatus(store, self.mirror)
        """Gateway API status on the stored routes and Gateways (gateway_status.py)."""
        self.settings = settings

    def __repr__(self) -> str:
        return f"<Mesh {self.replica} {self.distributor!r}>"

    async def start(self) -> None:
        """Read the whole store, then start following it and keeping the registry."""
        self.distributor.start()
        self.gateway_status.start()
        self.mirror.subscribe(self._tokens_changed)
        self.mirror.start()
        await asyncio.wait_for(self.mirror.synced.wait(), self.settings.sync_timeout_s)
        self.distributor.prime()
        self.registry.start()

    async def close(self) -> None:
        """Stop following the store."""
        self.distributor.close()
        await self.gateway_status.close()
        await self.registry.close()
        await self.mirror.close()

    def _tokens_changed(self, keys: frozenset[ObjectKey]) -> None:
        if not any(key.type == WORKLOAD_TOKENS for key in keys):
            return
        tokens: dict[bytes, Principal] = {}
        for stored in self.mirror.of_type(WORKLOAD_TOKENS):
            spec = stored.body.get("spec") or {}
            try:
                digest = bytes.fromhex(str(spec.get("sha256", "")))
            except ValueError:
                continue
            tokens[digest] = workload_principal(stored.key.namespace, str(spec.get("workload")))
        self.tokens.replace_workloads(tokens)

    def identity(self, namespace: str, service_account: str) -> str:
        """The SPIFFE id the CA signs for a workload's service account; "" without a CA."""
        if self.ca is None:
            return ""
        return spiffe_id(self.ca.trust_domain, namespace, service_account)

    def sign(self, csr: str, namespace: str, service_account: str) -> tuple[str, str]:
        """A workload's certificate chain for its CSR, or ("", why not)."""
        if self.ca is None:
            return "", "this control plane runs no CA (mTLS is off)"
        try:
            return self.ca.sign(csr, namespace=namespace, service_account=service_account), ""
        except CertificateRequestError as error:
            return "", str(error)

    def lease_proxies(self) -> list[dict[str, object]]:
        """What the other live replicas last reported about their proxies."""
        items: list[dict[str, object]] = []
        for stored in self.mirror.of_type(LEASES):
            spec = stored.body.get("spec") or {}
            if stored.key.name == self.replica or self.registry.lapsed(spec.get("renewedAt")):
                continue
            items.extend(spec.get("proxies") or [])
        return items
