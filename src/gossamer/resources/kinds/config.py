"""Kubernetes `v1` ConfigMap, Secret, ServiceAccount and Namespace: what a pod reads and runs as."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator, Mapping
from typing import ClassVar

from pydantic import Field

from gossamer.resources.base import Finding, Model, Opaque, Resource

# Kubernetes' rule for ConfigMap and Secret keys: they become file names and variable names.
_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")


def _check_keys(field: str, keys: Iterator[str] | list[str]) -> Iterator[Finding]:
    for key in keys:
        if not _KEY.fullmatch(key) or key in (".", ".."):
            yield Finding(
                (field, key),
                "a key must be letters, digits, '-', '_' or '.' (it becomes a file name)",
            )


def _check_base64(field: str, values: Mapping[str, str]) -> Iterator[Finding]:
    for key, value in values.items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            yield Finding((field, key), "must be base64 (stringData takes plain text)")


def _decoded(values: Mapping[str, str]) -> dict[str, bytes]:
    """The values that are base64 (check() reports the others)."""
    found = {}
    for key, value in values.items():
        try:
            found[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
    return found


class ConfigMap(Resource):
    """`v1` ConfigMap: configuration a pod reads as environment variables or files."""

    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = "ConfigMap"
    PLURAL: ClassVar[str] = "configmaps"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    data: dict[str, str] = Field(default_factory=dict)
    binary_data: dict[str, str] = Field(default_factory=dict)
    immutable: bool | None = None

    def check(self) -> Iterator[Finding]:
        """Keys that can be file names, binaryData in base64, no key in both."""
        yield from _check_keys("data", list(self.data))
        yield from _check_keys("binaryData", list(self.binary_data))
        yield from _check_base64("binaryData", self.binary_data)
        for key in self.binary_data:
            if key in self.data:
                yield Finding(("binaryData", key), "is also a key of data")

    def values(self) -> dict[str, bytes]:
        """Every key and its bytes."""
        found = {key: value.encode() for key, value in self.data.items()}
        found.update(_decoded(self.binary_data))
        return found


class Secret(Resource):
    """`v1` Secret: like a ConfigMap, with data in base64 (stringData as written)."""

    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = "Secret"
    PLURAL: ClassVar[str] = "secrets"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    data: dict[str, str] = Field(default_factory=dict)
    string_data: dict[str, str] = Field(default_factory=dict)
    type: str | None = None
    immutable: bool | None = None

    def check(self) -> Iterator[Finding]:
        """Keys that can be file names, data in base64."""
        yield from _check_keys("data", list(self.data))
        yield from _check_keys("stringData", list(self.string_data))
        yield from _check_base64("data", self.data)

    def values(self) -> dict[str, bytes]:
        """Every key and its bytes: data decoded, then stringData over it (as the API server
        merges them)."""
        found = _decoded(self.data)
        found.update({key: value.encode() for key, value in self.string_data.items()})
        return found


class ServiceAccount(Resource):
    """`v1` ServiceAccount: the identity pods run as (their SPIFFE id names it)."""

    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = "ServiceAccount"
    PLURAL: ClassVar[str] = "serviceaccounts"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    secrets: list[Opaque] = Field(default_factory=list)
    image_pull_secrets: list[Opaque] = Field(default_factory=list)
    automount_service_account_token: bool | None = None


class NamespaceSpec(Model):
    """A namespace's finalizers (written by a cluster)."""

    finalizers: list[str] = Field(default_factory=list)


class Namespace(Resource):
    """`v1` Namespace: objects are grouped by it; `up` stores it with the rest."""

    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = "Namespace"
    PLURAL: ClassVar[str] = "namespaces"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    spec: NamespaceSpec | None = None

    def check(self) -> Iterator[Finding]:
        """A namespace name is a DNS label, and a Namespace has no namespace itself."""
        if len(self.name) > 63 or "." in self.name:
            yield Finding(
                ("metadata", "name"),
                "a Namespace name is a DNS label: at most 63 letters, digits and '-'",
            )
