"""Kubernetes `apps/v1` Deployment, which Gossamer runs as local processes (command, args, env)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

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
)
from gossamer.resources.yamlsource import FieldPath


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


class EnvVar(Model):
    """An environment variable: a literal value, or valueFrom (kept as given)."""

    name: str
    value: str | None = None
    value_from: Opaque = None


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
    env_from: list[Opaque] = Field(default_factory=list)
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    startup_probe: Probe | None = None
    resources: Opaque = None
    resize_policy: list[Opaque] = Field(default_factory=list)
    restart_policy: Literal["Always", "OnFailure", "Never"] | None = None
    restart_policy_rules: list[Opaque] = Field(default_factory=list)
    volume_mounts: list[Opaque] = Field(default_factory=list)
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
    volumes: list[Opaque] = Field(default_factory=list)


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


class Deployment(Resource):
    """`apps/v1` Deployment."""

    GROUP: ClassVar[str] = "apps"
    KIND: ClassVar[str] = "Deployment"
    PLURAL: ClassVar[str] = "deployments"
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    spec: DeploymentSpec

    @property
    def pod_labels(self) -> Labels:
        """The labels every replica carries, which Service and policy selectors match."""
        return self.spec.template.metadata.labels

    def check(self) -> Iterator[Finding]:
        """A selector that matches the template, and containers Gossamer can run."""
        if not self.spec.selector.match_labels and not self.spec.selector.match_expressions:
            yield Finding(("spec", "selector"), "must select at least one label")
        elif not self.spec.selector.matches(self.pod_labels):
            yield Finding(
                ("spec", "selector"),
                "does not match spec.template.metadata.labels, so the Deployment would own "
                "none of its replicas",
            )
        pod = ("spec", "template", "spec")
        if not self.spec.template.spec.containers:
            yield Finding((*pod, "containers"), "must list at least one container")
        yield from _check_containers(self.spec.template.spec.containers, (*pod, "containers"))
        yield from _check_containers(
            self.spec.template.spec.init_containers, (*pod, "initContainers")
        )


def _check_containers(containers: list[Container], path: FieldPath) -> Iterator[Finding]:
    names: dict[str, int] = {}
    for index, container in enumerate(containers):
        where = (*path, index)
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


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
