"""Kubernetes kinds Gossamer keeps without acting on them: they load, are stored and served, and
`validate --strict` names them as accepted, not enforced. Their contents are kept as given."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from gossamer.resources.base import Opaque, Resource


class _Kept(Resource):
    """A kind whose spec is kept as given."""

    spec: Opaque = None


class Pod(_Kept):
    """`v1` Pod: a bare pod; kept, not run (Deployments, StatefulSets and Jobs are run)."""

    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = "Pod"
    PLURAL: ClassVar[str] = "pods"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)


class PodTemplate(Resource):
    """`v1` PodTemplate: a pod template on its own; kept."""

    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = "PodTemplate"
    PLURAL: ClassVar[str] = "podtemplates"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    template: Opaque = None


class ReplicationController(_Kept):
    """`v1` ReplicationController: the Deployment's predecessor; kept, not run."""

    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = "ReplicationController"
    PLURAL: ClassVar[str] = "replicationcontrollers"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)


class Endpoints(Resource):
    """`v1` Endpoints: written by a cluster for each Service; kept (the mesh registers its own)."""

    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = "Endpoints"
    PLURAL: ClassVar[str] = "endpoints"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    subsets: list[Opaque] = Field(default_factory=list)


class Event(Resource):
    """`v1` Event: something a cluster reported; kept."""

    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = "Event"
    PLURAL: ClassVar[str] = "events"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    involved_object: Opaque = None
    reason: str | None = None
    message: str | None = None
    source: Opaque = None
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    count: int | None = None
    type: str | None = None
    event_time: str | None = None
    series: Opaque = None
    action: str | None = None
    related: Opaque = None
    reporting_component: str | None = None
    reporting_instance: str | None = None


class LimitRange(_Kept):
    """`v1` LimitRange: default resource limits; kept (local processes are not limited)."""

    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = "LimitRange"
    PLURAL: ClassVar[str] = "limitranges"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)


class ResourceQuota(_Kept):
    """`v1` ResourceQuota: a namespace's resource budget; kept."""

    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = "ResourceQuota"
    PLURAL: ClassVar[str] = "resourcequotas"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)


class PersistentVolume(_Kept):
    """`v1` PersistentVolume: storage of a cluster; kept."""

    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = "PersistentVolume"
    PLURAL: ClassVar[str] = "persistentvolumes"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)


class PersistentVolumeClaim(_Kept):
    """`v1` PersistentVolumeClaim: a request for storage; kept."""

    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = "PersistentVolumeClaim"
    PLURAL: ClassVar[str] = "persistentvolumeclaims"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)


class Node(_Kept):
    """`v1` Node: a machine of a cluster; kept."""

    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = "Node"
    PLURAL: ClassVar[str] = "nodes"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)


class Binding(Resource):
    """`v1` Binding: a pod bound to a node; kept."""

    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = "Binding"
    PLURAL: ClassVar[str] = "bindings"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    target: Opaque = None


class ComponentStatus(Resource):
    """`v1` ComponentStatus: a cluster component's health; kept."""

    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = "ComponentStatus"
    PLURAL: ClassVar[str] = "componentstatuses"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    conditions: list[Opaque] = Field(default_factory=list)


class PodDisruptionBudget(_Kept):
    """`policy/v1` PodDisruptionBudget: how many pods a drain may take; kept (no drains here)."""

    GROUP: ClassVar[str] = "policy"
    KIND: ClassVar[str] = "PodDisruptionBudget"
    PLURAL: ClassVar[str] = "poddisruptionbudgets"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)


class NetworkPolicy(_Kept):
    """`networking.k8s.io/v1` NetworkPolicy: kept, not enforced (an AuthorizationPolicy is)."""

    GROUP: ClassVar[str] = "networking.k8s.io"
    KIND: ClassVar[str] = "NetworkPolicy"
    PLURAL: ClassVar[str] = "networkpolicies"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)


class IngressClass(_Kept):
    """`networking.k8s.io/v1` IngressClass: kept (the mesh's gateway serves every Ingress)."""

    GROUP: ClassVar[str] = "networking.k8s.io"
    KIND: ClassVar[str] = "IngressClass"
    PLURAL: ClassVar[str] = "ingressclasses"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)


class Role(Resource):
    """`rbac.authorization.k8s.io/v1` Role: permissions on the Kubernetes API; kept."""

    GROUP: ClassVar[str] = "rbac.authorization.k8s.io"
    KIND: ClassVar[str] = "Role"
    PLURAL: ClassVar[str] = "roles"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    rules: list[Opaque] = Field(default_factory=list)


class ClusterRole(Resource):
    """`rbac.authorization.k8s.io/v1` ClusterRole: permissions on the Kubernetes API; kept."""

    GROUP: ClassVar[str] = "rbac.authorization.k8s.io"
    KIND: ClassVar[str] = "ClusterRole"
    PLURAL: ClassVar[str] = "clusterroles"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    rules: list[Opaque] = Field(default_factory=list)
    aggregation_rule: Opaque = None


class RoleBinding(Resource):
    """`rbac.authorization.k8s.io/v1` RoleBinding: who holds a Role; kept."""

    GROUP: ClassVar[str] = "rbac.authorization.k8s.io"
    KIND: ClassVar[str] = "RoleBinding"
    PLURAL: ClassVar[str] = "rolebindings"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    subjects: list[Opaque] = Field(default_factory=list)
    role_ref: Opaque = None


class ClusterRoleBinding(Resource):
    """`rbac.authorization.k8s.io/v1` ClusterRoleBinding: who holds a ClusterRole; kept."""

    GROUP: ClassVar[str] = "rbac.authorization.k8s.io"
    KIND: ClassVar[str] = "ClusterRoleBinding"
    PLURAL: ClassVar[str] = "clusterrolebindings"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    subjects: list[Opaque] = Field(default_factory=list)
    role_ref: Opaque = None
