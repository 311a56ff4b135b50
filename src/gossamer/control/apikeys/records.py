"""Issued API keys as the store keeps them: `ApiKey` records holding a SHA-256, never a key."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from gossamer.control.store import ObjectKey, ResourceType, StoredObject
from gossamer.snapshot.translate_apiproduct import IssuedKey

API_KEYS = ResourceType("gossamer.dev", "apikeys")
KEY_PREFIX = "gsk_"
"""Issued keys start so, which makes a leaked one easy to find in logs and code."""


def issued_keys(records: Iterable[StoredObject]) -> list[IssuedKey]:
    """The stored keys as the translation reads them."""
    keys: list[IssuedKey] = []
    for stored in records:
        spec = stored.body.get("spec", {})
        product = f"{stored.key.namespace}/{spec.get('product', '')}"
        keys.append(
            (
                product,
                str(spec.get("consumer", "")),
                str(spec.get("sha256", "")),
                float(spec.get("expiresAt", 0.0) or 0.0),
                stored.key.name,
            )
        )
    return keys


def new_key(namespace: str, product: str, consumer: str) -> tuple[str, ObjectKey, dict[str, Any]]:
    """A fresh secret, and the record (key, body) that makes it valid."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    name = f"{consumer[:50]}-{digest[:10]}"
    body = {
        "apiVersion": "gossamer.dev/v1alpha1",
        "kind": "ApiKey",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "spec": {"product": product, "consumer": consumer, "sha256": digest},
    }
    return secret, ObjectKey(API_KEYS, namespace, name), body
