"""What the API serves: each (group, version, plural) of the resource registry and its model."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from gossamer.control.store.model import ResourceType
from gossamer.resources.base import Resource
from gossamer.resources.registry import KINDS, api_version


@dataclass(frozen=True, slots=True)
class ServedResource:
    """One resource at one version: its URL parts, its kind and the model that validates it."""

    group: str
    version: str
    kind: str
    plural: str
    model: type[Resource]

    @property
    def api_version(self) -> str:
        """`networking.istio.io/v1`, or `v1` for the core group."""
        return api_version(self.group, self.version)

    @property
    def type(self) -> ResourceType:
        """Where the store keeps it: every version of a group's resource shares one place."""
        return ResourceType(self.group, self.plural)

    @property
    def base_path(self) -> str:
        """`/api/v1` or `/apis/GROUP/VERSION`."""
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


class Catalog:
    """Look up served resources by URL parts; built once from the registry."""

    def __init__(self, kinds: Mapping[tuple[str, str, str], type[Resource]] = KINDS) -> None:
        self._kinds = dict(kinds)
        self._by_path: dict[tuple[str, str, str], ServedResource] = {}
        for (group, version, kind), model in sorted(kinds.items()):
            served = ServedResource(group, version, kind, model.PLURAL, model)
            self._by_path[(group, version, model.PLURAL)] = served

    def __repr__(self) -> str:
        return f"<Catalog {len(self._by_path)} resources>"

    def __iter__(self) -> Iterator[ServedResource]:
        return iter(self._by_path.values())

    def find(self, group: str, version: str, plural: str) -> ServedResource | None:
        """The resource a URL names, or None."""
        return self._by_path.get((group, version, plural))

    def model_of(self, version_text: str, kind: str) -> type[Resource] | None:
        """The model of a stored object's apiVersion and kind (None if no longer served)."""
        group, _, version = version_text.rpartition("/")
        return self._kinds.get((group, version, kind))
