"""The names commands accept for a kind (`VirtualService`, `virtualservices`, `vs`, ...).

Each served resource answers to its kind in any case, its plural, its singular, the short names
kubectl and istioctl give it, and `plural.group` or `singular.group` for when a name fits
several groups. Commands read one version per resource: the most stable one served.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from gossamer.control.api.catalog import Catalog, ServedResource

SHORT_NAMES: dict[str, tuple[str, ...]] = {
    "services": ("svc",),
    "deployments": ("deploy",),
    "ingresses": ("ing",),
    "virtualservices": ("vs",),
    "destinationrules": ("dr",),
    "gateways": ("gw",),
    "serviceentries": ("se",),
    "peerauthentications": ("pa",),
    "authorizationpolicies": ("ap",),
    "requestauthentications": ("ra",),
    "horizontalpodautoscalers": ("hpa",),
    "statefulsets": ("sts",),
    "configmaps": ("cm",),
    "serviceaccounts": ("sa",),
    "namespaces": ("ns",),
}
"""Short names by plural, as kubectl and istioctl spell them."""

LEGACY_GROUPS = frozenset({"extensions"})
"""Groups served for old manifests only: a name that also fits a current group means that one."""

YIELDING_GROUPS = frozenset({"gateway.networking.k8s.io"})
"""Groups whose names yield to another group's: `gateway` and `gw` keep meaning Istio's Gateway,
as before the Gateway API was read; `gateways.gateway.networking.k8s.io` names the other."""

_VERSION = re.compile(r"v(\d+)(?:(alpha|beta)(\d+))?\Z")
_STABILITY = {None: 2, "beta": 1, "alpha": 0}


class UnknownResourceError(ValueError):
    """A name that is no served kind; the message lists the names there are."""


def version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes' order of versions, highest first when sorted in reverse: v2 > v1 > v1beta1."""
    match = _VERSION.match(version)
    if match is None:
        return (-1, 0, 0)
    major, stability, minor = match.groups()
    return (_STABILITY[stability], int(major), int(minor or 0))


def preferred_resources(catalog: Iterable[ServedResource]) -> list[ServedResource]:
    """One served resource per group and plural, at its most stable version; core kinds first."""
    best: dict[tuple[str, str], ServedResource] = {}
    for served in catalog:
        key = (served.group, served.plural)
        chosen = best.get(key)
        if chosen is None or version_priority(served.version) > version_priority(chosen.version):
            best[key] = served
    return sorted(
        best.values(),
        key=lambda s: (s.group in LEGACY_GROUPS, s.group in YIELDING_GROUPS, s.group, s.plural),
    )


def kind_ref(kind: str, group: str) -> str:
    """How kubectl names a kind in its output: `service`, `virtualservice.networking.istio.io`."""
    return f"{kind.lower()}.{group}" if group else kind.lower()


def object_ref(served: ServedResource, name: str) -> str:
    """`virtualservice.networking.istio.io/reviews`, `service/reviews`."""
    return f"{kind_ref(served.kind, served.group)}/{name}"


class ResourceNames:
    """Every name of every served resource, built once from the catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.resources = preferred_resources(catalog)
        self._by_name: dict[str, list[ServedResource]] = {}
        for served in self.resources:
            for name in _names(served):
                self._by_name.setdefault(name, []).append(served)

    def __repr__(self) -> str:
        return f"<ResourceNames {len(self._by_name)} names for {len(self.resources)} resources>"

    def resolve(self, text: str) -> ServedResource:
        """The resource a command-line name means; UnknownResourceError when none."""
        found = self._by_name.get(text.lower())
        if not found:
            known = ", ".join(
                f"{s.plural} ({', '.join(SHORT_NAMES[s.plural])})"
                if s.plural in SHORT_NAMES
                else s.plural
                for s in self.resources
                if s.group not in LEGACY_GROUPS
            )
            raise UnknownResourceError(
                f'the server doesn\'t have a resource type "{text}" (it serves {known})'
            )
        # `preferred_resources` puts legacy groups last, so the current group wins a tie.
        return found[0]


def split_kind_name(kind: str, name: str | None) -> tuple[str, str | None]:
    """`KIND NAME` as given, or `KIND/NAME` (what `get -o name` prints) split in two."""
    if name is None and "/" in kind:
        kind, _, name = kind.partition("/")
    return kind, name or None


def _names(served: ServedResource) -> set[str]:
    singular = served.kind.lower()
    names = {singular, served.plural, *SHORT_NAMES.get(served.plural, ())}
    if served.group:
        names |= {f"{singular}.{served.group}", f"{served.plural}.{served.group}"}
    return names
