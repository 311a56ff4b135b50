"""The kinds Gossamer reads, by apiVersion and kind; clear words when a manifest names another."""

from __future__ import annotations

import difflib

from gossamer.resources.base import Resource
from gossamer.resources.kinds.apps import (
    ControllerRevision,
    DaemonSet,
    Deployment,
    ReplicaSet,
    StatefulSet,
)
from gossamer.resources.kinds.autoscaling import HorizontalPodAutoscaler
from gossamer.resources.kinds.batch import CronJob, Job
from gossamer.resources.kinds.config import ConfigMap, Namespace, Secret, ServiceAccount
from gossamer.resources.kinds.core import Service
from gossamer.resources.kinds.gateway_api import Gateway as ApiGateway
from gossamer.resources.kinds.gateway_api import GatewayClass, ReferenceGrant
from gossamer.resources.kinds.gateway_api_routes import GRPCRoute, HTTPRoute, TCPRoute, TLSRoute
from gossamer.resources.kinds.gossamer_kinds import ApiProduct, Topic
from gossamer.resources.kinds.ingress import Ingress, IngressV1Beta1
from gossamer.resources.kinds.istio_networking import (
    DestinationRule,
    Gateway,
    ServiceEntry,
    VirtualService,
    WorkloadEntry,
)
from gossamer.resources.kinds.istio_security import (
    AuthorizationPolicy,
    PeerAuthentication,
    RequestAuthentication,
)
from gossamer.resources.kinds.kept import (
    Binding,
    ClusterRole,
    ClusterRoleBinding,
    ComponentStatus,
    Endpoints,
    Event,
    IngressClass,
    LimitRange,
    NetworkPolicy,
    Node,
    PersistentVolume,
    PersistentVolumeClaim,
    Pod,
    PodDisruptionBudget,
    PodTemplate,
    ReplicationController,
    ResourceQuota,
    Role,
    RoleBinding,
)
from gossamer.resources.kinds.telemetry import Telemetry, TelemetryProvider

MODELS: tuple[type[Resource], ...] = (
    Service,
    Deployment,
    StatefulSet,
    Job,
    ConfigMap,
    Secret,
    ServiceAccount,
    Namespace,
    Ingress,
    IngressV1Beta1,
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    WorkloadEntry,
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
    Telemetry,
    Topic,
    ApiProduct,
    TelemetryProvider,
    HorizontalPodAutoscaler,
    GatewayClass,
    ApiGateway,
    HTTPRoute,
    ReferenceGrant,
    # Kept without acting on them (gossamer.resources.support.KEPT).
    DaemonSet,
    ReplicaSet,
    ControllerRevision,
    CronJob,
    Pod,
    PodTemplate,
    ReplicationController,
    Endpoints,
    Event,
    LimitRange,
    ResourceQuota,
    PersistentVolume,
    PersistentVolumeClaim,
    Node,
    Binding,
    ComponentStatus,
    PodDisruptionBudget,
    NetworkPolicy,
    IngressClass,
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
    GRPCRoute,
    TLSRoute,
    TCPRoute,
)

# Older API groups that serve the same schema as a model above.
_ALSO_SERVED: dict[tuple[str, str, str], type[Resource]] = {
    ("networking.k8s.io", "v1beta1", "Ingress"): IngressV1Beta1,
}


def api_version(group: str, version: str) -> str:
    """`apps` + `v1` -> `apps/v1`; the core group is written as the version alone."""
    return f"{group}/{version}" if group else version


def _table() -> dict[tuple[str, str, str], type[Resource]]:
    table = {
        (model.GROUP, version, model.KIND): model for model in MODELS for version in model.VERSIONS
    }
    table.update(_ALSO_SERVED)
    return table


KINDS: dict[tuple[str, str, str], type[Resource]] = _table()


class UnknownKindError(Exception):
    """A manifest names an apiVersion and kind Gossamer does not read; `field` says which is off."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def split_api_version(value: str) -> tuple[str, str]:
    """`networking.istio.io/v1` -> (`networking.istio.io`, `v1`); `v1` -> (``, `v1`)."""
    group, _, version = value.rpartition("/")
    return group, version


def lookup(version_text: str, kind: str) -> type[Resource]:
    """The model for apiVersion + kind, or UnknownKindError explaining what is served instead."""
    group, version = split_api_version(version_text)
    model = KINDS.get((group, version, kind))
    if model is not None:
        return model
    served = sorted(api_version(g, v) for (g, v, k) in KINDS if k == kind)
    # A kind several groups have (Gateway) is named in the group the manifest wrote, if any.
    same_group = [text for text in served if split_api_version(text)[0] == group]
    served = same_group or served
    if served:
        return _raise(
            "apiVersion",
            f"{kind} is read as {_or_list(served)}, not {version_text}",
        )
    lowered = {k.lower(): k for (_, _, k) in KINDS}
    if kind.lower() in lowered:
        return _raise("kind", f"unknown kind {kind}; did you mean {lowered[kind.lower()]}?")
    close = difflib.get_close_matches(kind, sorted(lowered.values()), n=1, cutoff=0.8)
    if close:
        return _raise("kind", f"unknown kind {kind}; did you mean {close[0]}?")
    in_group = sorted({k for (g, _, k) in KINDS if g == group})
    if in_group:
        where = api_version(group, version)
        return _raise("kind", f"unknown kind {kind} ({where} has {', '.join(in_group)})")
    groups = ", ".join(sorted({g or "core" for (g, _, _) in KINDS}))
    return _raise(
        "kind", f"unknown kind {kind}: Gossamer does not read the API group {group} ({groups})"
    )


def _raise(field: str, message: str) -> type[Resource]:
    raise UnknownKindError(field, message)


def _or_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]
