"""Opaque secrets handed to users (refresh, confirmation, reset tokens), stored only as hashes."""

from __future__ import annotations

import hashlib
import secrets


def new_secret() -> str:
    """32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """What is stored in place of the secret: its sha256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()
