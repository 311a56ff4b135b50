"""What `gossamer up` will run for a folder of manifests: replicas, their ports, the gateway.

Pure: resources and a port allocator in, a `MeshPlan` out. Each replica of a Deployment,
StatefulSet or Job is a pair, its sidecar and its app; the app's first container is the process
(one process per replica: a local mesh has no pods to hold several), with its environment
resolved from ConfigMaps, Secrets and the Downward API, and its volumes as files. Every port is
allocated up front so that the plan can be printed, and so that several meshes on one host do
not collide.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import yaml

from gossamer.resources import Resource
from gossamer.resources.gateway_api_binding import GatewayApiIndex
from gossamer.resources.kinds.apps import Container, Deployment, Probe, StatefulSet, Workload
from gossamer.resources.kinds.batch import Job
from gossamer.resources.kinds.ingress import Ingress, IngressV1Beta1
from gossamer.resources.kinds.istio_networking import Gateway
from gossamer.resources.podconfig import (
    ConfigSource,
    Missing,
    PodFacts,
    VolumeFiles,
    container_env,
    pod_volumes,
)
from gossamer.resources.problems import format_path
from gossamer.snapshot.translate_catalog import opaque_port_names
from gossamer.snapshot.translate_gateway_api import wants_tls as gateway_api_wants_tls
from gossamer.snapshot.translate_passthrough import serves_passthrough

PortAllocator = Callable[[int], int]
"""A free port on loopback: the preferred one when it is free (0: no preference), else any."""

GATEWAY_NAMESPACE = "istio-system"
GATEWAY_WORKLOAD = "istio-ingressgateway"
GATEWAY_SERVICE_ACCOUNT = "istio-ingressgateway-service-account"
TRUST_DOMAIN = "cluster.local"


class PlanError(ValueError):
    """The manifests cannot run locally; the message names the object and the field."""


@dataclass(frozen=True, slots=True)
class Readiness:
    """A Kubernetes readinessProbe as `up` runs it against the app's one port."""

    kind: str
    """`http`, `tcp` or `exec`."""
    path: str = "/"
    command: tuple[str, ...] = ()
    period_s: float = 10.0
    timeout_s: float = 1.0
    failure_threshold: int = 3


@dataclass(frozen=True, slots=True)
class Mount:
    """A volume where the container mounts it: the process is told the folder by a variable."""

    volume: str
    mount_path: str
    sub_path: str = ""


@dataclass(frozen=True, slots=True)
class Replica:
    """One replica of a workload: its app process and the sidecar in front of it."""

    deployment: str
    namespace: str
    index: int
    argv: tuple[str, ...]
    env: Mapping[str, str]
    service_account: str
    labels: Mapping[str, str]
    app_port: int
    outbound_port: int
    inbound_port: int
    admin_port: int
    readiness: Readiness | None
    working_dir: str | None = None
    hold_until_proxy_starts: bool = False
    """Start the app only once its sidecar is ready (Istio's holdApplicationUntilProxyStarts);
    by default both start at once, as in Istio."""
    kind: str = "Deployment"
    """The workload's kind: Deployment, StatefulSet or Job."""
    restart: str = "Always"
    """The pod's restartPolicy: a Job's runs until it succeeds."""
    backoff_limit: int | None = None
    """A Job's failed runs before it is failed."""
    volumes: tuple[VolumeFiles, ...] = ()
    mounts: tuple[Mount, ...] = ()
    tcp_ports: tuple[tuple[str, int], ...] = ()
    """(Service port name, sidecar port) for each opaque TCP port of the Services selecting
    the workload: the sidecar takes that port's connections there, as the mesh-facing port
    does for HTTP."""

    @property
    def pod(self) -> str:
        """The replica's pod name, as the Downward API and HOSTNAME give it: `web-0`."""
        return f"{self.deployment}-{self.index}"

    @property
    def name(self) -> str:
        """`reviews-v1-0`: unique in a mesh on one host (namespaces other than default prefix)."""
        prefix = "" if self.namespace == "default" else f"{self.namespace}."
        return f"{prefix}{self.deployment}-{self.index}"

    @property
    def service(self) -> str:
        """The service the replica belongs to: its `app` label, else its Deployment."""
        return self.labels.get("app", self.deployment)

    @property
    def identity(self) -> str:
        """The SPIFFE id the replica's workload speaks as."""
        return f"spiffe://{TRUST_DOMAIN}/ns/{self.namespace}/sa/{self.service_account}"


@dataclass(frozen=True, slots=True)
class MeshPlan:
    """Everything `up` starts, with its ports."""

    control_plane_port: int
    replicas: tuple[Replica, ...]
    gateway_port: int | None = None
    gateway_https_port: int | None = None
    gateway_passthrough_port: int | None = None
    """Set when an Istio Gateway has a PASSTHROUGH server: TLS routed by SNI there."""
    """Set when an Ingress has `tls`: its hosts are served over TLS there."""
    gateway_admin_port: int | None = None
    gateway_workers: int = 1
    """Gateway processes sharing its ports (`gossamer proxy --workers`), from the
    `gossamer.dev/gateway-workers` annotation of an Ingress or Gateway (the highest wins)."""
    dns_port: int = 15053
    vip_admin_port: int = 0
    vip_network: str = "127.77.0.0/16"
    dns_forwarders: tuple[str, ...] = ()
    """Resolvers (IP:PORT) for names outside the mesh; none: the DNS refuses them."""
    deployments: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    """(namespace, name) of every workload, in manifest order."""


def plan_mesh(
    resources: Sequence[Resource],
    ports: PortAllocator,
    gateway_port: int = 8080,
    vip_network: str = "127.77.0.0/16",
    dns_forwarders: tuple[str, ...] = (),
    *,
    control_plane_port: int = 15010,
) -> MeshPlan:
    """Replicas for every workload, and a gateway when an Ingress or Gateway exists (a Gateway
    API Gateway when its class is the mesh's)."""
    control_plane_port = ports(control_plane_port)
    replicas: list[Replica] = []
    deployments: list[tuple[str, str]] = []
    source = ConfigSource.of(resources)
    for resource in resources:
        if isinstance(resource, Workload):
            deployments.append((resource.namespace, resource.name))
            opaque = opaque_port_names(resources, resource.namespace, resource.pod_labels)
            replicas.extend(_replicas(resource, ports, source, opaque))
    gateway_api = GatewayApiIndex.of(resources)
    wants_gateway = bool(gateway_api.served_gateways()) or any(
        isinstance(r, Ingress | IngressV1Beta1 | Gateway) for r in resources
    )
    wants_tls = gateway_api_wants_tls(gateway_api) or any(
        isinstance(r, Ingress | IngressV1Beta1) and any(t.secret_name for t in r.spec.tls)
        for r in resources
    )
    return MeshPlan(
        control_plane_port=control_plane_port,
        replicas=tuple(replicas),
        gateway_port=ports(gateway_port) if wants_gateway else None,
        gateway_https_port=ports(8443) if wants_tls else None,
        gateway_passthrough_port=ports(9443) if _wants_passthrough(resources) else None,
        gateway_admin_port=ports(0) if wants_gateway else None,
        gateway_workers=_gateway_workers(resources),
        dns_port=ports(15053),
        vip_admin_port=ports(0),
        vip_network=vip_network,
        dns_forwarders=dns_forwarders,
        deployments=tuple(deployments),
    )


def _replicas(
    workload: Workload, ports: PortAllocator, source: ConfigSource, opaque: Sequence[str]
) -> list[Replica]:
    return [
        replica_of(workload, index, ports, source, opaque)
        for index in range(replica_count(workload))
    ]


def replica_count(workload: Workload) -> int:
    """How many replicas a workload asks for: a Job's completions, else its replicas."""
    if isinstance(workload, Job):
        return workload.completions
    if isinstance(workload, Deployment | StatefulSet):
        return workload.spec.replicas
    return 1


def replica_of(
    workload: Workload,
    index: int,
    ports: PortAllocator,
    source: ConfigSource | None = None,
    opaque: Sequence[str] = (),
) -> Replica:
    """Replica number `index` of a workload, with fresh ports (one more per name in `opaque`,
    its opaque TCP Service ports); ConfigMaps and Secrets from `source` (PlanError naming the
    field when one it needs is missing)."""
    template = workload.template
    pod = template.spec
    where = f"{workload.KIND} {workload.namespace}/{workload.name}"
    if not pod.containers:
        raise PlanError(f"{where}: spec.template.spec.containers: needs one container")
    container = pod.containers[0]
    if not container.command:
        raise PlanError(f"{where}: containers[0].command: a local process needs a command")
    name = f"{workload.name}-{index}"
    labels = workload.replica_labels(name)
    facts = PodFacts(
        name=name,
        namespace=workload.namespace,
        labels=labels,
        annotations=template.metadata.annotations,
        service_account=pod.account,
    )
    source = source or ConfigSource()
    path = ("spec", "template", "spec", "containers", 0)
    env = container_env(container, workload.namespace, source, facts, path)
    volumes, missing = pod_volumes(
        pod, workload.namespace, source, ("spec", "template", "spec"), facts
    )
    _refuse(where, [*env.missing, *env.unavailable, *missing])
    return Replica(
        deployment=workload.name,
        namespace=workload.namespace,
        index=index,
        argv=_argv(container),
        env=env.values,
        service_account=pod.account,
        labels=labels,
        app_port=ports(0),
        outbound_port=ports(0),
        inbound_port=ports(0),
        admin_port=ports(0),
        readiness=_readiness(container.readiness_probe, where),
        working_dir=container.working_dir,
        hold_until_proxy_starts=_holds_app(template.metadata.annotations, where),
        kind=workload.KIND,
        restart=pod.restart_policy,
        backoff_limit=workload.backoff_limit if isinstance(workload, Job) else None,
        volumes=tuple(volumes),
        mounts=tuple(
            Mount(mount.name, mount.mount_path, mount.sub_path or "")
            for mount in container.volume_mounts
        ),
        tcp_ports=tuple((name, ports(0)) for name in opaque),
    )


def _refuse(where: str, missing: list[Missing]) -> None:
    if missing:
        details = "; ".join(f"{format_path(m.path)}: {m.message}" for m in missing)
        raise PlanError(f"{where}: {details}")


PROXY_CONFIG_ANNOTATION = "proxy.istio.io/config"
GATEWAY_WORKERS_ANNOTATION = "gossamer.dev/gateway-workers"


def _wants_passthrough(resources: Sequence[Resource]) -> bool:
    return any(
        isinstance(r, Gateway) and any(serves_passthrough(s) for s in r.spec.servers)
        for r in resources
    )


def _gateway_workers(resources: Sequence[Resource]) -> int:
    """The most gateway workers any Ingress or Gateway asks for with its annotation; 1 if none."""
    workers = 1
    for resource in resources:
        if not isinstance(resource, Ingress | IngressV1Beta1 | Gateway):
            continue
        text = resource.metadata.annotations.get(GATEWAY_WORKERS_ANNOTATION)
        if text is None:
            continue
        where = f"{resource.kind} {resource.namespace}/{resource.name}"
        if not text.isdigit() or not 1 <= int(text) <= 64:
            raise PlanError(
                f"{where}: annotation {GATEWAY_WORKERS_ANNOTATION}: a number from 1 to 64"
            )
        workers = max(workers, int(text))
    return workers


def _holds_app(annotations: Mapping[str, str], where: str) -> bool:
    """`holdApplicationUntilProxyStarts` of Istio's per-pod ProxyConfig annotation (YAML)."""
    text = annotations.get(PROXY_CONFIG_ANNOTATION)
    if text is None:
        return False
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PlanError(
            f"{where}: annotation {PROXY_CONFIG_ANNOTATION}: not YAML: {error}"
        ) from None
    if not isinstance(config, dict):
        raise PlanError(f"{where}: annotation {PROXY_CONFIG_ANNOTATION}: must be a mapping")
    hold = config.get("holdApplicationUntilProxyStarts", False)
    if not isinstance(hold, bool):
        raise PlanError(
            f"{where}: annotation {PROXY_CONFIG_ANNOTATION}: holdApplicationUntilProxyStarts "
            "must be true or false"
        )
    return hold


def _argv(container: Container) -> tuple[str, ...]:
    argv = [*container.command, *container.args]
    # `python` in a manifest means the interpreter Gossamer runs on (its venv has the app's deps).
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return tuple(argv)


def _readiness(probe: Probe | None, where: str) -> Readiness | None:
    if probe is None:
        return None
    period = float(probe.period_seconds or 10)
    timeout = float(probe.timeout_seconds or 1)
    threshold = probe.failure_threshold or 3
    if probe.http_get is not None:
        path = probe.http_get.path or "/"
        return Readiness("http", path, (), period, timeout, threshold)
    if probe.tcp_socket is not None:
        return Readiness("tcp", "/", (), period, timeout, threshold)
    if probe.exec is not None and probe.exec.command:
        return Readiness("exec", "/", tuple(probe.exec.command), period, timeout, threshold)
    raise PlanError(f"{where}: readinessProbe: only httpGet, tcpSocket and exec run locally")
