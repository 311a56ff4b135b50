"""The shared budgets of API consumers: gateways lease permits of them in small slices.

Each (product, consumer) has one token bucket here (its plan's rate and burst), shared by the
gateway replicas that ask in proportion to their demand (sharing.py), and a quota count. A
lease asks for `want` permits; the grant debits both at once, so no permit is ever handed out
twice and every gateway together admits at most what the plan allows. Unused permits come back
with later leases. Quotas are reserved from the store in blocks (a record per consumer and
period, advanced with compare-and-swap), so a restart of this control plane, or another
replica, never hands out a quota twice; a restart forgets at most one block.
docs/api-gateway.md, "Limits across replicas", gives the error bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from gossamer.control.apikeys.sharing import SharedBucket
from gossamer.control.mesh.mirror import StoreMirror
from gossamer.control.store import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    ObjectKey,
    ResourceType,
    StoreError,
)
from gossamer.resources.kinds.gossamer_kinds import ApiProduct as ApiProductResource
from gossamer.snapshot.model import ApiPlan
from gossamer.snapshot.periods import period_end
from gossamer.snapshot.protocol import Grant, Lease, LeaseGrants, LeaseRequest
from gossamer.snapshot.translate_apiproduct import plans_of

log = logging.getLogger(__name__)

API_QUOTAS = ResourceType("gossamer.dev", "apiquotas")
"""Quota reservations: one record per consumer, holding the period and what is reserved."""


def quota_block(plan: ApiPlan) -> int:
    """Permits reserved from the store at a time: a thousandth of the quota, 10 to 1000."""
    return max(10, min(1000, plan.quota // 1000))


@dataclass
class QuotaBlock:
    """What this replica reserved of a consumer's quota and has not granted yet."""

    key: ObjectKey
    left: int = 0
    period_end: float = 0.0
    reserved: int = 0
    """The store's reservation (every replica's) when this replica last advanced it."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class LeaseBook:
    """Grants leases of every consumer's budget on this control plane replica."""

    def __init__(self, mirror: StoreMirror) -> None:
        self.mirror = mirror
        self.buckets: dict[tuple[str, str], SharedBucket] = {}
        self.quotas: dict[tuple[str, str], QuotaBlock] = {}
        self.granted = 0
        self._plans: dict[tuple[str, str], ApiPlan] | None = None
        mirror.subscribe(self._changed)

    def __repr__(self) -> str:
        return f"<LeaseBook {len(self.buckets)} buckets, {len(self.quotas)} quotas>"

    def _changed(self, keys: frozenset[ObjectKey]) -> None:
        if any(key.type.plural == "apiproducts" for key in keys):
            self._plans = None

    def plans(self) -> dict[tuple[str, str], ApiPlan]:
        """Each (product, consumer) to its plan, from the products the store holds now."""
        if self._plans is None:
            products = [
                r for r in self.mirror.resources.values() if isinstance(r, ApiProductResource)
            ]
            self._plans = plans_of(products)
        return self._plans

    async def grant(self, request: LeaseRequest, replica: str = "") -> LeaseGrants:
        """Answer every lease of a batch from one gateway `replica` (its stream)."""
        grants = [await self._one(lease, replica) for lease in request.leases]
        return LeaseGrants(request.seq, tuple(grants))

    async def _one(self, lease: Lease, replica: str) -> Grant:
        key = (lease.product, lease.consumer)
        plan = self.plans().get(key)
        if plan is None:
            return Grant(lease.product, lease.consumer, unknown=True)
        now = time.monotonic()
        bucket = self._bucket(key, plan, now)
        quota = self._quota(key, plan) if plan.quota > 0 else None
        if lease.returned > 0:
            if bucket is not None:
                bucket.give_back(lease.returned, now)
            if quota is not None:
                quota.left += lease.returned
        want = max(0, lease.want)
        if want == 0:
            return Grant(lease.product, lease.consumer)
        limit = ""
        granted = want
        if bucket is not None:
            granted = bucket.grant(replica, want, lease.demand, now)
            if granted < want:
                limit = "rate"
        if quota is not None and granted > 0:
            try:
                taken = await self._take_quota(quota, plan, granted)
            except StoreError as error:
                log.warning("quota of %s/%s unavailable: %s", *key, error)
                if bucket is not None:
                    bucket.refund(replica, granted)
                return Grant(lease.product, lease.consumer, unknown=True)
            if taken < granted:
                if bucket is not None:
                    bucket.refund(replica, granted - taken)
                granted, limit = taken, "quota"
        self.granted += granted
        return Grant(
            lease.product,
            lease.consumer,
            granted=granted,
            retry_after=self._retry_after(limit, bucket, quota, granted, replica),
            limit=limit,
            remaining=int(bucket.tokens()) if bucket is not None else 0,
            quota_remaining=max(0, plan.quota - quota.reserved + quota.left) if quota else -1,
        )

    def _bucket(self, key: tuple[str, str], plan: ApiPlan, now: float) -> SharedBucket | None:
        if plan.rate <= 0:
            self.buckets.pop(key, None)
            return None
        bucket = self.buckets.get(key)
        if bucket is None or bucket.rate != plan.rate or bucket.burst != plan.burst:
            bucket = self.buckets[key] = SharedBucket(plan.rate, plan.burst, now)
        return bucket

    def _quota(self, key: tuple[str, str], plan: ApiPlan) -> QuotaBlock:
        quota = self.quotas.get(key)
        if quota is None:
            namespace, _, product = key[0].partition("/")
            record = ObjectKey(API_QUOTAS, namespace, f"{product}.{key[1]}")
            quota = self.quotas[key] = QuotaBlock(record)
        return quota

    async def _take_quota(self, quota: QuotaBlock, plan: ApiPlan, want: int) -> int:
        async with quota.lock:
            wall = time.time()
            if wall >= quota.period_end:
                quota.left = 0
                quota.period_end = period_end(plan.quota_period, wall)
            while quota.left < want:
                got = await self._reserve(quota, plan, max(quota_block(plan), want))
                if got == 0:
                    break
                quota.left += got
            taken = min(want, quota.left)
            quota.left -= taken
            return taken

    async def _reserve(self, quota: QuotaBlock, plan: ApiPlan, amount: int) -> int:
        """Advance the stored reservation by up to `amount`; what it advanced by."""
        store = self.mirror.store
        while True:
            try:
                stored = await store.get(quota.key)
            except NotFoundError:
                body = _record(quota, plan, min(plan.quota, amount))
                try:
                    await store.create(quota.key, body)
                except AlreadyExistsError:
                    continue
                quota.reserved = body["spec"]["reserved"]
                return int(quota.reserved)
            spec = stored.body.get("spec", {})
            reserved = int(spec.get("reserved", 0))
            if float(spec.get("periodEnd", 0.0)) != quota.period_end:
                reserved = 0  # a new period starts from nothing
            advanced = min(plan.quota, reserved + amount)
            body = _record(quota, plan, advanced)
            try:
                await store.replace(quota.key, body, expected_version=stored.version)
            except ConflictError:
                continue  # another replica reserved meanwhile: read again
            quota.reserved = advanced
            return advanced - reserved

    @staticmethod
    def _retry_after(
        limit: str,
        bucket: SharedBucket | None,
        quota: QuotaBlock | None,
        granted: int,
        replica: str,
    ) -> float:
        if granted > 0 or not limit:
            return 0.0
        if limit == "quota" and quota is not None:
            return max(1.0, quota.period_end - time.time())
        assert bucket is not None
        return bucket.retry_after(replica)


def _record(quota: QuotaBlock, plan: ApiPlan, reserved: int) -> dict[str, Any]:
    product, _, consumer = quota.key.name.rpartition(".")
    return {
        "apiVersion": "gossamer.dev/v1alpha1",
        "kind": "ApiQuota",
        "metadata": {"name": quota.key.name, "namespace": quota.key.namespace},
        "spec": {
            "product": product,
            "consumer": consumer,
            "period": plan.quota_period,
            "periodEnd": quota.period_end,
            "reserved": reserved,
            "quota": plan.quota,
        },
    }
