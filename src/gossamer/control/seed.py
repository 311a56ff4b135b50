"""Write resources and workload tokens straight into a sqlite store before its control plane runs.

`gossamer up` seeds the store this way so that the control plane, the proxies and the apps can
all start at once: everything a proxy asks for on its first connection is already there. Writes
pass the same admission as the API (server-owned metadata, the resource model), and a resource
that exists is replaced, as `gossamer apply` would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gossamer.control.api.admission import Admission, Target, document_of
from gossamer.control.api.catalog import Catalog
from gossamer.control.mesh.service import WORKLOAD_TOKENS, new_workload_token
from gossamer.control.store import NotFoundError, Scope
from gossamer.control.store.sqlite import SqliteStore
from gossamer.resources import Resource


async def seed_store(
    path: Path,
    resources: Sequence[tuple[Resource, Mapping[str, Any]]],
    workloads: Sequence[tuple[str, str]],
) -> dict[tuple[str, str], str]:
    """Store the resources (each with the document it was read from, stored as written, so
    that a later `apply` of the same file finds it unchanged), and a new token per (namespace,
    workload), older ones revoked.

    Returns the tokens, which exist nowhere else: write them where their proxies read them.
    """
    store = await SqliteStore.open(path)
    catalog, admission = Catalog(), Admission()
    try:
        for resource, data in resources:
            group, _, version = resource.api_version.rpartition("/")
            served = catalog.find(group, version, type(resource).PLURAL)
            assert served is not None, f"{resource.api_version} {resource.kind} is not served"
            target = Target(served, resource.namespace)
            document = document_of(data)
            key = target.key(resource.name)
            try:
                current = await store.get(key)
            except NotFoundError:
                await store.create(key, admission.create(target, document).body)
            else:
                admitted = admission.update(target, document, current)
                await store.replace(key, admitted.body, current.version)
        for old in (await store.list(Scope(WORKLOAD_TOKENS))).items:
            await store.delete(old.key)
        tokens: dict[tuple[str, str], str] = {}
        for namespace, workload in workloads:
            token, key, body = new_workload_token(namespace, workload)
            await store.create(key, body)
            tokens[(namespace, workload)] = token
        return tokens
    finally:
        await store.close()
