"""Kubernetes `apps/v1` workloads (Deployment, StatefulSet run as local processes) and pod specs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from gossamer.resources.base import (
    Finding,
    IntOrString,
    Labels,
    Model,
    NonNegative,
    ObjectMeta,
    Opaque,
    Port,
    Positive,
    Resource,
    ranged,
)
from gossamer.resources.yamlsource import FieldPath

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
"""The label Kubernetes gives each StatefulSet pod: its own name, for a Service per pod."""
LABEL_FIELD = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")
FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels['KEY']",
    "metadata.annotations['KEY']",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
)
"""The pod fields the Downward API gives as environment variables, as Kubernetes lists them."""


def field_path_known(path: str) -> bool:
    """Whether a fieldRef names a field the Downward API gives."""
    return path in FIELD_PATHS or LABEL_FIELD.fullmatch(path) is not None


class LabelSelectorRequirement(Model):
    """One set-based selector term: key In/NotIn/Exists/DoesNotExist values."""

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)


class LabelSelector(Model):
    """Kubernetes label selector: matchLabels and matchExpressions, all of which must hold."""

    match_labels: Labels = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    def matches(self, labels: Labels) -> bool:
        """Whether an object with these labels is selected."""
        if any(labels.get(key) != value for key, value in self.match_labels.items()):
            return False
        for term in self.match_expressions:
            present = term.key in labels
            if term.operator == "In" and labels.get(term.key) not in term.values:
                return False
            if term.operator == "NotIn" and present and labels[term.key] in term.values:
                return False
            if term.operator == "Exists" and not present:
                return False
            if term.operator == "DoesNotExist" and present:
                return False
        return True


class KeySelector(Model):
    """One key of a ConfigMap or Secret (configMapKeyRef, secretKeyRef)."""

    name: str = ""
    key: str
    optional: bool | None = None


class ObjectFieldSelector(Model):
    """The Downward API: a field of the pod (`metadata.name`, `status.podIP`, ...)."""

    api_version: str | None = None
    field_path: str


class ResourceFieldSelector(Model):
    """The Downward API: a container's resource request or limit."""

    container_name: str | None = None
    resource: str
    divisor: IntOrString | None = None


class EnvVarSource(Model):
    """Where an environment variable's value comes from; exactly one source."""

    config_map_key_ref: KeySelector | None = None
    secret_key_ref: KeySelector | None = None
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None
    file_key_ref: Opaque = None

    def sources(self) -> list[str]:
        """The sources this names (exactly one is valid)."""
        named = (
            ("configMapKeyRef", self.config_map_key_ref),
            ("secretKeyRef", self.secret_key_ref),
            ("fieldRef", self.field_ref),
            ("resourceFieldRef", self.resource_field_ref),
            ("fileKeyRef", self.file_key_ref),
        )
        return [name for name, source in named if source is not None]


class EnvVar(Model):
    """An environment variable: a literal value, or valueFrom a ConfigMap, Secret or the pod."""

    name: str
    value: str | None = None
    value_from: EnvVarSource | None = None


class ObjectReference(Model):
    """A whole ConfigMap or Secret (envFrom)."""

    name: str = ""
    optional: bool | None = None


class EnvFromSource(Model):
    """Every key of a ConfigMap or Secret as environment variables, optionally prefixed."""

    prefix: str | None = None
    config_map_ref: ObjectReference | None = None
    secret_ref: ObjectReference | None = None


class KeyToPath(Model):
    """A key of a ConfigMap or Secret written to a relative path of its volume."""

    key: str
    path: str
    mode: Annotated[int, ranged(0, 0o777)] | None = None


class ConfigMapVolumeSource(Model):
    """A ConfigMap as a folder of files, one per key (or per item)."""

    name: str = ""
    items: list[KeyToPath] = Field(default_factory=list)
    default_mode: Annotated[int, ranged(0, 0o777)] | None = None
    optional: bool | None = None


class SecretVolumeSource(Model):
    """A Secret as a folder of files, one per key (or per item)."""

    secret_name: str = ""
    items: list[KeyToPath] = Field(default_factory=list)
    default_mode: Annotated[int, ranged(0, 0o777)] | None = None
    optional: bool | None = None


class EmptyDirVolumeSource(Model):
    """A scratch folder that lives as long as the replica."""

    medium: str | None = None
    size_limit: IntOrString | None = None


class Volume(Model):
    """A pod volume: ConfigMaps, Secrets and emptyDir become folders; the rest are kept."""

    name: str
    config_map: ConfigMapVolumeSource | None = None
    secret: SecretVolumeSource | None = None
    empty_dir: EmptyDirVolumeSource | None = None
    projected: Opaque = None
    downward_api: Opaque = Field(default=None, alias="downwardAPI")
    persistent_volume_claim: Opaque = None
    ephemeral: Opaque = None
    host_path: Opaque = None
    image: Opaque = None
    csi: Opaque = None
    nfs: Opaque = None
    iscsi: Opaque = None
    git_repo: Opaque = None
    aws_elastic_block_store: Opaque = None
    azure_disk: Opaque = None
    azure_file: Opaque = None
    cephfs: Opaque = None
    cinder: Opaque = None
    fc: Opaque = None
    flex_volume: Opaque = None
    flocker: Opaque = None
    gce_persistent_disk: Opaque = None
    glusterfs: Opaque = None
    photon_persistent_disk: Opaque = None
    portworx_volume: Opaque = None
    quobyte: Opaque = None
    rbd: Opaque = None
    scale_io: Opaque = Field(default=None, alias="scaleIO")
    storageos: Opaque = None
    vsphere_volume: Opaque = None


class VolumeMount(Model):
    """Where a container sees a volume (or, with subPath, one file or folder of it)."""

    name: str
    mount_path: str
    sub_path: str | None = None
    sub_path_expr: str | None = None
    read_only: bool | None = None
    recursive_read_only: str | None = None
    mount_propagation: str | None = None


class ContainerPort(Model):
    """A port the process listens on."""

    container_port: Port
    name: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    host_ip: str | None = Field(default=None, alias="hostIP")
    host_port: Port | None = None


class ExecAction(Model):
    """Run a command; exit 0 means healthy."""

    command: list[str] = Field(default_factory=list)


class HTTPHeader(Model):
    """A header sent with an HTTP probe."""

    name: str
    value: str


class HTTPGetAction(Model):
    """An HTTP GET; a status from 200 to 399 means healthy."""

    path: str | None = None
    port: IntOrString
    host: str | None = None
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    http_headers: list[HTTPHeader] = Field(default_factory=list)


class TCPSocketAction(Model):
    """A TCP connect; an accepted connection means healthy."""

    port: IntOrString
    host: str | None = None


class GRPCAction(Model):
    """A gRPC health check."""

    port: Port
    service: str | None = None


class Probe(Model):
    """How to tell that a process is ready (or alive, or started)."""

    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    grpc: GRPCAction | None = None
    initial_delay_seconds: NonNegative | None = None
    timeout_seconds: Positive | None = None
    period_seconds: Positive | None = None
    success_threshold: Positive | None = None
    failure_threshold: Positive | None = None
    termination_grace_period_seconds: Positive | None = None

    def actions(self) -> list[str]:
        """The handlers this probe names (exactly one is valid)."""
        named = (
            ("exec", self.exec),
            ("httpGet", self.http_get),
            ("tcpSocket", self.tcp_socket),
            ("grpc", self.grpc),
        )
        return [name for name, action in named if action is not None]


class Container(Model):
    """A container of the Kubernetes reference; Gossamer runs its command as a local process."""

    name: str
    image: str | None = None
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    working_dir: str | None = None
    ports: list[ContainerPort] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    env_from: list[EnvFromSource] = Field(default_factory=list)
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    startup_probe: Probe | None = None
    resources: Opaque = None
    resize_policy: list[Opaque] = Field(default_factory=list)
    restart_policy: Literal["Always", "OnFailure", "Never"] | None = None
    restart_policy_rules: list[Opaque] = Field(default_factory=list)
    volume_mounts: list[VolumeMount] = Field(default_factory=list)
    volume_devices: list[Opaque] = Field(default_factory=list)
    lifecycle: Opaque = None
    termination_message_path: str | None = None
    termination_message_policy: Literal["File", "FallbackToLogsOnError"] | None = None
    image_pull_policy: Literal["Always", "Never", "IfNotPresent"] | None = None
    security_context: Opaque = None
    stdin: bool | None = None
    stdin_once: bool | None = None
    tty: bool | None = None


class PodSpec(Model):
    """Every field of the Kubernetes PodSpec; scheduling and volume fields are kept as given."""

    containers: list[Container]
    init_containers: list[Container] = Field(default_factory=list)
    ephemeral_containers: list[Opaque] = Field(default_factory=list)
    eviction_responders: list[Opaque] = Field(default_factory=list)
    service_account_name: str | None = None
    service_account: str | None = None
    automount_service_account_token: bool | None = None
    restart_policy: Literal["Always", "OnFailure", "Never"] = "Always"
    termination_grace_period_seconds: NonNegative | None = None
    active_deadline_seconds: Positive | None = None
    hostname: str | None = None
    hostname_override: str | None = None
    subdomain: str | None = None
    set_hostname_as_fqdn: bool | None = Field(default=None, alias="setHostnameAsFQDN")
    host_aliases: list[Opaque] = Field(default_factory=list)
    dns_policy: str | None = None
    dns_config: Opaque = None
    enable_service_links: bool | None = None
    host_network: bool | None = None
    host_pid: bool | None = Field(default=None, alias="hostPID")
    host_ipc: bool | None = Field(default=None, alias="hostIPC")
    host_users: bool | None = None
    share_process_namespace: bool | None = None
    node_name: str | None = None
    node_selector: Labels = Field(default_factory=dict)
    affinity: Opaque = None
    tolerations: list[Opaque] = Field(default_factory=list)
    topology_spread_constraints: list[Opaque] = Field(default_factory=list)
    scheduler_name: str | None = None
    scheduling_gates: list[Opaque] = Field(default_factory=list)
    scheduling_group: Opaque = None
    workload_ref: Opaque = None
    priority: int | None = None
    priority_class_name: str | None = None
    preemption_policy: str | None = None
    runtime_class_name: str | None = None
    overhead: Opaque = None
    os: Opaque = None
    readiness_gates: list[Opaque] = Field(default_factory=list)
    resource_claims: list[Opaque] = Field(default_factory=list)
    resources: Opaque = None
    security_context: Opaque = None
    image_pull_secrets: list[Opaque] = Field(default_factory=list)
    volumes: list[Volume] = Field(default_factory=list)

    @property
    def account(self) -> str:
        """The service account the pod runs as (`default` when it names none)."""
        return self.service_account_name or self.service_account or "default"


class PodTemplateSpec(Model):
    """The pods a Deployment makes: their labels and their spec."""

    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: PodSpec


class RollingUpdateDeployment(Model):
    """How many replicas may be added or missing during a rollout."""

    max_surge: IntOrString | None = None
    max_unavailable: IntOrString | None = None


class DeploymentStrategy(Model):
    """How replicas are replaced when the template changes."""

    type: Literal["RollingUpdate", "Recreate"] = "RollingUpdate"
    rolling_update: RollingUpdateDeployment | None = None


class DeploymentSpec(Model):
    """Every field of the Kubernetes DeploymentSpec."""

    replicas: NonNegative = 1
    selector: LabelSelector
    template: PodTemplateSpec
    strategy: DeploymentStrategy | None = None
    min_ready_seconds: NonNegative | None = None
    revision_history_limit: NonNegative | None = None
    progress_deadline_seconds: Positive | None = None
    paused: bool | None = None


class Workload(Resource):
    """A kind whose pods Gossamer runs as local processes: Deployment, StatefulSet, Job."""

    @property
    def template(self) -> PodTemplateSpec:
        """The pods it makes."""
        raise NotImplementedError

    @property
    def pod_labels(self) -> Labels:
        """The labels every replica carries, which Service and policy selectors match."""
        return self.template.metadata.labels

    @property
    def selector(self) -> LabelSelector | None:
        """The selector that owns its pods, when the kind has one that must match."""
        return None

    def replica_labels(self, pod: str) -> dict[str, str]:
        """The labels of the replica named `pod` (a StatefulSet adds the pod's own name)."""
        return dict(self.pod_labels)

    def check(self) -> Iterator[Finding]:
        """A selector that matches the template, and containers Gossamer can run."""
        selector = self.selector
        if selector is not None:
            if not selector.match_labels and not selector.match_expressions:
                yield Finding(("spec", "selector"), "must select at least one label")
            elif not selector.matches(self.pod_labels):
                yield Finding(
                    ("spec", "selector"),
                    f"does not match spec.template.metadata.labels, so the {self.KIND} would own "
                    "none of its replicas",
                )
        yield from check_pod(self.template.spec, ("spec", "template", "spec"), self.claims)

    @property
    def claims(self) -> tuple[str, ...]:
        """Volumes its pods mount besides the pod's own (a StatefulSet's claim templates)."""
        return ()


def check_pod(pod: PodSpec, path: FieldPath, claims: tuple[str, ...] = ()) -> Iterator[Finding]:
    """Kubernetes' rules for a pod spec, and Gossamer's: each container needs a command."""
    if not pod.containers:
        yield Finding((*path, "containers"), "must list at least one container")
    volumes: dict[str, int] = dict.fromkeys(claims, -1)
    for index, volume in enumerate(pod.volumes):
        if volume.name in volumes:
            yield Finding(
                (*path, "volumes", index, "name"), f"also names volumes[{volumes[volume.name]}]"
            )
        volumes.setdefault(volume.name, index)
    yield from _check_containers(pod.containers, (*path, "containers"), volumes)
    yield from _check_containers(pod.init_containers, (*path, "initContainers"), volumes)


class Deployment(Workload):
    """`apps/v1` Deployment."""

    GROUP: ClassVar[str] = "apps"
    KIND: ClassVar[str] = "Deployment"
    PLURAL: ClassVar[str] = "deployments"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    spec: DeploymentSpec

    @property
    def template(self) -> PodTemplateSpec:
        """The pods it makes."""
        return self.spec.template

    @property
    def selector(self) -> LabelSelector:
        """The selector that owns its pods."""
        return self.spec.selector


class StatefulSetUpdateStrategy(Model):
    """How pods are replaced when the template changes."""

    type: Literal["RollingUpdate", "OnDelete"] = "RollingUpdate"
    rolling_update: Opaque = None


class StatefulSetSpec(Model):
    """Every field of the Kubernetes StatefulSetSpec; volume claims are kept as given."""

    service_name: str | None = None
    replicas: NonNegative = 1
    selector: LabelSelector
    template: PodTemplateSpec
    volume_claim_templates: list[Opaque] = Field(default_factory=list)
    pod_management_policy: Literal["OrderedReady", "Parallel"] = "OrderedReady"
    update_strategy: StatefulSetUpdateStrategy | None = None
    revision_history_limit: NonNegative | None = None
    min_ready_seconds: NonNegative | None = None
    persistent_volume_claim_retention_policy: Opaque = None
    ordinals: Opaque = None


class StatefulSet(Workload):
    """`apps/v1` StatefulSet: replicas named NAME-0, NAME-1, each with its own DNS name."""

    GROUP: ClassVar[str] = "apps"
    KIND: ClassVar[str] = "StatefulSet"
    PLURAL: ClassVar[str] = "statefulsets"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    spec: StatefulSetSpec

    @property
    def template(self) -> PodTemplateSpec:
        """The pods it makes."""
        return self.spec.template

    def replica_labels(self, pod: str) -> dict[str, str]:
        """The template's labels and the pod's own name, as Kubernetes labels each pod."""
        return {**self.pod_labels, POD_NAME_LABEL: pod} if pod else dict(self.pod_labels)

    @property
    def claims(self) -> tuple[str, ...]:
        """The names of its volumeClaimTemplates, which its pods mount as volumes."""
        names = []
        for claim in self.spec.volume_claim_templates:
            metadata = claim.get("metadata") if isinstance(claim, dict) else None
            if isinstance(metadata, dict) and isinstance(metadata.get("name"), str):
                names.append(metadata["name"])
        return tuple(names)

    @property
    def selector(self) -> LabelSelector:
        """The selector that owns its pods."""
        return self.spec.selector


class KeptSpec(Resource):
    """A kind whose spec Gossamer keeps as given, without acting on it."""

    spec: Opaque = None


class DaemonSet(KeptSpec):
    """`apps/v1` DaemonSet: one pod per node; kept, not run (a local mesh has no nodes)."""

    GROUP: ClassVar[str] = "apps"
    KIND: ClassVar[str] = "DaemonSet"
    PLURAL: ClassVar[str] = "daemonsets"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)


class ReplicaSet(KeptSpec):
    """`apps/v1` ReplicaSet: kept, not run (Deployments make their own replicas)."""

    GROUP: ClassVar[str] = "apps"
    KIND: ClassVar[str] = "ReplicaSet"
    PLURAL: ClassVar[str] = "replicasets"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)


class ControllerRevision(Resource):
    """`apps/v1` ControllerRevision: a cluster's record of a template; kept."""

    GROUP: ClassVar[str] = "apps"
    KIND: ClassVar[str] = "ControllerRevision"
    PLURAL: ClassVar[str] = "controllerrevisions"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    data: Opaque = None
    revision: int = 0


def _check_containers(
    containers: list[Container], path: FieldPath, volumes: dict[str, int]
) -> Iterator[Finding]:
    names: dict[str, int] = {}
    for index, container in enumerate(containers):
        where = (*path, index)
        yield from _check_sources(container, where, volumes)
        if container.name in names:
            yield Finding((*where, "name"), f"also names container {names[container.name]}")
        names.setdefault(container.name, index)
        if not container.command:
            hint = f" (image {container.image} is kept but not run)" if container.image else ""
            yield Finding(
                (*where, "command"),
                "a command is needed: Gossamer runs each container as a local process, "
                f"so give command (and args){hint}",
            )
        for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = getattr(container, _snake(probe_name))
            if probe is not None and len(probe.actions()) != 1:
                yield Finding(
                    (*where, probe_name),
                    "must name exactly one of exec, httpGet, tcpSocket or grpc",
                )


def _check_sources(
    container: Container, where: FieldPath, volumes: dict[str, int]
) -> Iterator[Finding]:
    for index, variable in enumerate(container.env):
        source = variable.value_from
        if source is not None and len(source.sources()) != 1:
            yield Finding(
                (*where, "env", index, "valueFrom"),
                "must name exactly one of configMapKeyRef, secretKeyRef, fieldRef, "
                "resourceFieldRef or fileKeyRef",
            )
        elif (
            source is not None
            and source.field_ref is not None
            and not field_path_known(source.field_ref.field_path)
        ):
            yield Finding(
                (*where, "env", index, "valueFrom", "fieldRef", "fieldPath"),
                f"the Downward API gives {', '.join(FIELD_PATHS)}",
            )
    for index, origin in enumerate(container.env_from):
        if (origin.config_map_ref is None) == (origin.secret_ref is None):
            yield Finding(
                (*where, "envFrom", index), "must name exactly one of configMapRef or secretRef"
            )
    for index, mount in enumerate(container.volume_mounts):
        if mount.name not in volumes:
            yield Finding(
                (*where, "volumeMounts", index, "name"),
                f"no volume named {mount.name} in spec.volumes",
            )


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
