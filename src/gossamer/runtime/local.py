"""A whole mesh on this host: the control plane, then the manifests, then gateway, sidecars, apps.

Supervisors, started in turn and stopped in reverse: the first runs the control plane; once it
answers, the manifests are applied through its API and a token is minted for every workload;
the second runs the DNS, the VIP proxy and the gateway; then each replica gets a supervisor of
its own for its sidecar and app (an app starts only once its sidecar runs its first snapshot).
While up, the mesh follows the Deployments in the control plane: `gossamer apply` of a new
replica count (or a new Deployment) starts or stops replicas. A Job's replicas run to completion:
`up` does not wait for them to be ready, and each one's sidecar stops when its app has succeeded
or failed for good. Everything lives under the state
folder: the control plane's store and admin token, workload tokens (0600), one log per process,
`up.json` for the CLI and `status.json` for `gossamer status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydantic

from gossamer.control.auth import load_admin_token
from gossamer.control.seed import seed_store
from gossamer.control.server import CA_DIR, STORE_FILE
from gossamer.control.telemetry.defaults import builtin_tracing
from gossamer.proxy.agent import http_ok
from gossamer.resources import Resource
from gossamer.resources.kinds.apps import Deployment
from gossamer.resources.podconfig import ConfigSource
from gossamer.runtime.autoscaler import SYNC_S, Autoscaler, Pod
from gossamer.runtime.backoff import BackoffPolicy
from gossamer.runtime.environment import (
    app_environment,
    data_folder,
    dns_environment,
    expand_references,
)
from gossamer.runtime.plan import (
    GATEWAY_NAMESPACE,
    GATEWAY_SERVICE_ACCOUNT,
    GATEWAY_WORKLOAD,
    MeshPlan,
    PlanError,
    PortAllocator,
    Readiness,
    Replica,
    replica_count,
    replica_of,
)
from gossamer.runtime.pods import PodPublisher, declared_containers, keep_published
from gossamer.runtime.settle import routing_settled
from gossamer.runtime.spec import ProcessSpec, ReadinessProbe, RestartPolicy
from gossamer.runtime.status import Phase, ProcessEvent, ProcessStatus
from gossamer.runtime.summary import jobs_summary, services_summary, status_row
from gossamer.runtime.supervisor import Supervisor
from gossamer.runtime.traffic import RateMeter, served_requests
from gossamer.runtime.volumes import materialize
from gossamer.security.ca import CertificateAuthority
from gossamer.security.trust import (
    TRUST_BUNDLE,
    client_context,
    control_plane_spiffe_id,
    verify_control_plane,
)
from gossamer.snapshot.translate_catalog import opaque_port_names

log = logging.getLogger(__name__)

UP_FILE = "up.json"
STATUS_FILE = "status.json"
CONTROL_PLANE = "control-plane"
GATEWAY = "gateway"
DNS = "dns"
VIP_PROXY = "vip-proxy"
VIP_WORKLOAD = "gossamer-vip-proxy"
PROBE_S = 0.25
"""How often the mesh's own processes are probed: fast enough to start quickly, cheap enough."""


@dataclass(frozen=True, slots=True)
class LocalMeshConfig:
    """Where the manifests are and where the mesh keeps its state."""

    source: Path
    """The folder (or file) of manifests; apps run with it as working directory."""
    state: Path
    backoff: BackoffPolicy | None = None
    stop_timeout_s: float = 30.0
    certificate_lifetime_s: float = 86400.0
    """How long workload certificates are valid; proxies renew at half of it."""
    hpa_sync_s: float = SYNC_S
    """How often HorizontalPodAutoscalers are reconciled (autoscaler.py)."""
    instance_ttl_s: float = 30.0
    """How long the control plane keeps an instance whose proxy is gone."""


class LocalMesh:
    """Starts the plan's processes in order and keeps the CLI's files current."""

    def __init__(
        self,
        config: LocalMeshConfig,
        plan: MeshPlan,
        resources: Sequence[Resource],
        documents: Sequence[Mapping[str, Any]],
        ports: PortAllocator,
    ) -> None:
        self.config = config
        self.plan = plan
        self.resources = resources
        self.documents = documents
        self.url = f"https://127.0.0.1:{plan.control_plane_port}"
        self.logs = config.state / "logs"
        self.tokens = config.state / "tokens"
        self.core: Supervisor | None = None
        self.services: Supervisor | None = None
        self.replicas: dict[str, tuple[Replica, Supervisor]] = {}
        self.kinds: dict[str, str] = {}
        self.started_at = time.time()
        self.ports = ports
        self._tokens: dict[tuple[str, str], Path] = {}
        self._follow: asyncio.Task[None] | None = None
        self._meter_task: asyncio.Task[None] | None = None
        self._autoscale_task: asyncio.Task[None] | None = None
        self._pods_task: asyncio.Task[None] | None = None
        self.pods = PodPublisher()
        self._finishing: set[asyncio.Task[None]] = set()
        self.meter = RateMeter()
        self.replica_meter = RateMeter()
        """Requests per second each replica's sidecar served, by replica name."""
        self.source = ConfigSource.of(resources)

    def __repr__(self) -> str:
        return f"<LocalMesh {self.config.source} at {self.url}>"

    @property
    def admin_token_file(self) -> Path:
        """The control plane's admin token, which the CLI uses."""
        return self.config.state / "control-plane" / "admin-token"

    @property
    def ca_folder(self) -> Path:
        """The mesh CA's files, made before anything starts so that every client has roots."""
        return self.config.state / "control-plane" / CA_DIR

    @property
    def ca_file(self) -> Path:
        """What every process `up` starts verifies the control plane with."""
        return self.ca_folder / TRUST_BUNDLE

    @property
    def events_url(self) -> str | None:
        """The first event broker among the apps (`gossamer events serve`), for the CLI."""
        for replica in self.plan.replicas:
            words = " ".join(replica.argv)
            if " events serve" in words:
                return f"http://127.0.0.1:{replica.app_port}"
        return None

    @property
    def workdir(self) -> Path:
        """Where apps run: the manifests' folder."""
        source = self.config.source
        return source if source.is_dir() else source.parent

    async def start(self, ready_timeout_s: float = 60.0) -> None:
        """Start everything; return when every process is ready (TimeoutError says who is not).

        The store is seeded first (manifests and a token per workload), so that every process
        can start at once: proxies connect as soon as the control plane answers, apps start as
        soon as their sidecar runs its first snapshot.
        """
        for folder in (self.config.state, self.logs, self.tokens):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        load_admin_token(self.admin_token_file.parent)
        # Written before the control plane starts: no client ever runs without the roots.
        CertificateAuthority.load_or_create(self.ca_folder)
        workloads = [(GATEWAY_NAMESPACE, VIP_WORKLOAD)]
        if self.plan.gateway_port is not None:
            workloads.append((GATEWAY_NAMESPACE, GATEWAY_WORKLOAD))
        workloads += sorted({(r.namespace, r.deployment) for r in self.plan.replicas})
        seeded = list(zip(self.resources, self.documents, strict=True))
        seeded += builtin_tracing(self.resources, self.url)
        tokens = await seed_store(self.store_file, seeded, workloads)
        for key, token in tokens.items():
            self._tokens[key] = self._write_token(*key, token)
        self.core = self._supervisor([self._control_plane()])
        self.services = self._supervisor(self._service_specs())
        self.core.start()
        self.services.start()
        for replica in self.plan.replicas:
            self._start_replica(replica)
        self._write_up_file(ready=False)
        started = time.monotonic()
        for supervisor in self._long_running():
            await supervisor.wait_ready(ready_timeout_s)
        # Ready processes, then routing that reaches them (settle.py).
        instances = sum(1 for replica, _ in self.replicas.values() if replica.kind != "Job")
        left = max(5.0, ready_timeout_s - (time.monotonic() - started))
        async with self._api() as api:
            await routing_settled(api, instances, left)
        self._write_up_file(ready=True)
        self.write_status()
        loop = asyncio.get_running_loop()
        self._follow = loop.create_task(self._follow_deployments())
        self._meter_task = loop.create_task(self._measure())
        autoscaler = Autoscaler(self._api, self.pods_of, self.config.hpa_sync_s)
        self._autoscale_task = loop.create_task(autoscaler.run())
        self._pods_task = loop.create_task(
            keep_published(
                self.pods,
                self._api,
                lambda: list(self.replicas.values()),
                declared_containers(self.documents),
            )
        )

    @property
    def store_file(self) -> Path:
        """The control plane's sqlite store."""
        return self.admin_token_file.parent / STORE_FILE

    async def stop(self) -> None:
        """Stop the replicas, then the DNS, VIP proxy and gateway, then the control plane."""
        for task in (self._follow, self._meter_task, self._autoscale_task, self._pods_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.gather(*(supervisor.stop() for _, supervisor in self.replicas.values()))
        for supervisor in (self.services, self.core):
            if supervisor is not None:
                await supervisor.stop()
        self.write_status()
        with contextlib.suppress(FileNotFoundError):
            (self.config.state / UP_FILE).unlink()

    def statuses(self) -> list[ProcessStatus]:
        """Every process, in start order."""
        return [status for supervisor in self._supervisors() for status in supervisor.statuses()]

    def _supervisors(self) -> list[Supervisor]:
        fixed = [s for s in (self.core, self.services) if s is not None]
        return fixed + [supervisor for _, supervisor in self.replicas.values()]

    def _long_running(self) -> list[Supervisor]:
        """Every supervisor but those of Jobs, which end instead of becoming ready."""
        fixed = [s for s in (self.core, self.services) if s is not None]
        return fixed + [s for replica, s in self.replicas.values() if replica.kind != "Job"]

    def _api(self) -> httpx.AsyncClient:
        token = self.admin_token_file.read_text(encoding="utf-8").strip()
        return httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30.0,
            verify=client_context(self.ca_file),
        )

    def _start_replica(self, replica: Replica) -> None:
        supervisor = self._supervisor(
            [
                self._sidecar(replica, self._tokens[(replica.namespace, replica.deployment)]),
                self._app(replica),
            ]
        )
        self.replicas[replica.name] = (replica, supervisor)
        if replica.kind == "Job":
            supervisor.subscribe(lambda event: self._job_changed(replica, supervisor, event))
        supervisor.start()

    def _job_changed(self, replica: Replica, supervisor: Supervisor, event: ProcessEvent) -> None:
        """A Job's app that succeeded, or failed for good, no longer needs its sidecar."""
        if event.name != replica.name or event.status.phase not in (Phase.STOPPED, Phase.FAILED):
            return
        if self.replicas.get(replica.name, (None, None))[1] is not supervisor:
            return
        task = asyncio.get_running_loop().create_task(supervisor.stop())
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _follow_deployments(self, interval_s: float = 1.0) -> None:
        """Start and stop replicas as the Deployments in the control plane say."""
        async with self._api() as api:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    response = await api.get("/apis/apps/v1/deployments")
                    response.raise_for_status()
                    await self._scale(api, _deployments(response.json().get("items") or []))
                except (httpx.HTTPError, PlanError) as error:
                    log.warning("cannot follow the Deployments: %s", error)

    async def _scale(self, api: httpx.AsyncClient, deployments: Sequence[Deployment]) -> None:
        wanted: dict[str, Deployment] = {}
        # Only Deployments are followed; StatefulSets and Jobs keep what `up` started.
        kept = {
            name for name, (replica, _) in self.replicas.items() if replica.kind != "Deployment"
        }
        for deployment in deployments:
            for index in range(replica_count(deployment)):
                prefix = "" if deployment.namespace == "default" else f"{deployment.namespace}."
                wanted[f"{prefix}{deployment.name}-{index}"] = deployment
        for name in [name for name in self.replicas if name not in wanted and name not in kept]:
            _, supervisor = self.replicas.pop(name)
            log.info("scaling down: stopping %s", name)
            await supervisor.stop()
        for name, deployment in wanted.items():
            if name not in self.replicas:
                key = (deployment.namespace, deployment.name)
                if key not in self._tokens:
                    self._tokens[key] = await self._mint(api, *key)
                index = int(name.rsplit("-", 1)[1])
                log.info("scaling up: starting %s", name)
                opaque = opaque_port_names(
                    self.resources, deployment.namespace, deployment.pod_labels
                )
                replica = replica_of(deployment, index, self.ports, self.source, opaque)
                self._start_replica(replica)
        self.write_status()

    def write_status(self) -> None:
        """`status.json`: what `gossamer status` prints."""
        rows = [status_row(status, self.kinds.get(status.name, "")) for status in self.statuses()]
        _write_json(
            self.config.state / STATUS_FILE,
            {
                "server": self.url,
                "gateway": self.gateway_url,
                "updated": time.time(),
                "processes": rows,
                "services": self.services_summary(),
                "jobs": jobs_summary(self.replicas),
            },
        )

    def services_summary(self) -> list[dict[str, Any]]:
        """Each service: its replicas, how many are ready, and requests per second."""
        ready = {s.name for s in self.statuses() if s.ready}
        return services_summary(self.replicas, ready, self.meter.rates)

    async def _measure(self, interval_s: float = 1.0) -> None:
        """Read every sidecar's request counters each second, for the rates."""
        async with httpx.AsyncClient(timeout=1.0) as http:
            while True:
                readings = []
                per_replica: dict[str, float] = {}
                for replica, _ in list(self.replicas.values()):
                    url = f"http://127.0.0.1:{replica.admin_port}/stats/prometheus"
                    try:
                        served = served_requests((await http.get(url)).text)
                    except httpx.HTTPError:
                        continue
                    readings.append(served)
                    per_replica[replica.name] = sum(served.values())
                self.meter.read(readings)
                self.replica_meter.read([per_replica])
                self.write_status()
                await asyncio.sleep(interval_s)

    def pods_of(self, namespace: str, deployment: str) -> list[Pod]:
        """A Deployment's replicas, for the autoscaler: app process, readiness, request rate."""
        pods = []
        for name, (replica, supervisor) in self.replicas.items():
            if replica.namespace == namespace and replica.deployment == deployment:
                app = supervisor.status(replica.name)
                rate = self.replica_meter.rates.get(name, 0.0)
                pods.append(Pod(name, app.pid, app.ready, rate))
        return pods

    @property
    def gateway_url(self) -> str | None:
        """Where the ingress gateway answers, when there is one."""
        port = self.plan.gateway_port
        return f"http://127.0.0.1:{port}" if port else None

    def _supervisor(self, specs: Sequence[ProcessSpec]) -> Supervisor:
        supervisor = Supervisor(
            specs, backoff=self.config.backoff, stop_timeout_s=self.config.stop_timeout_s
        )
        supervisor.subscribe(self._changed)
        return supervisor

    def _changed(self, event: ProcessEvent) -> None:
        self.write_status()

    def _write_up_file(self, *, ready: bool) -> None:
        _write_json(
            self.config.state / UP_FILE,
            {
                "server": self.url,
                "token_file": str(self.admin_token_file),
                "ca_file": str(self.ca_file),
                "pid": os.getpid(),
                "source": str(self.config.source),
                "gateway": self.gateway_url,
                "gateway_https": (
                    f"https://127.0.0.1:{self.plan.gateway_https_port}"
                    if self.plan.gateway_https_port
                    else None
                ),
                "gateway_passthrough": (
                    f"127.0.0.1:{self.plan.gateway_passthrough_port}"
                    if self.plan.gateway_passthrough_port
                    else None
                ),
                "dns": f"127.0.0.1:{self.plan.dns_port}",
                "vip_network": self.plan.vip_network,
                "events": self.events_url,
                "ready": ready,
            },
        )

    def _control_plane(self) -> ProcessSpec:
        self.kinds[CONTROL_PLANE] = "control-plane"
        argv = [sys.executable, "-m", "gossamer", "control-plane"]
        argv += ["--listen", f"127.0.0.1:{self.plan.control_plane_port}"]
        argv += ["--state", str(self.config.state / "control-plane")]
        argv += ["--certificate-lifetime", f"{self.config.certificate_lifetime_s:g}s"]
        argv += ["--instance-ttl", f"{self.config.instance_ttl_s:g}s"]
        port = self.plan.control_plane_port
        return ProcessSpec(
            name=CONTROL_PLANE,
            argv=argv,
            log_path=self.logs / f"{CONTROL_PLANE}.log",
            readiness=ReadinessProbe(
                lambda: is_control_plane(port, self.ca_file), period_s=PROBE_S, timeout_s=1.0
            ),
            ports=(port,),
        )

    def _service_specs(self) -> list[ProcessSpec]:
        specs: list[ProcessSpec] = [self._dns()]
        specs.append(self._vip_proxy(self._tokens[(GATEWAY_NAMESPACE, VIP_WORKLOAD)]))
        if self.plan.gateway_port is not None:
            specs.append(self._gateway(self._tokens[(GATEWAY_NAMESPACE, GATEWAY_WORKLOAD)]))
        return specs

    async def _mint(self, api: httpx.AsyncClient, namespace: str, workload: str) -> Path:
        response = await api.post(
            f"/auth/v1/namespaces/{namespace}/workloadtokens", json={"workload": workload}
        )
        response.raise_for_status()
        return self._write_token(namespace, workload, response.json()["token"])

    def _write_token(self, namespace: str, workload: str, token: str) -> Path:
        path = self.tokens / f"{namespace}.{workload}"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(token + "\n")
        return path

    def _proxy_argv(self, workload: str, namespace: str, token: Path, admin: int) -> list[str]:
        argv = [sys.executable, "-m", "gossamer.proxy.runner", "--control-plane", self.url]
        argv += ["--ca-file", str(self.ca_file)]
        argv += ["--workload", workload, "--namespace", namespace, "--token-file", str(token)]
        argv += ["--admin", f"127.0.0.1:{admin}", "--drain-timeout", "5"]
        return argv

    def _dns(self) -> ProcessSpec:
        self.kinds[DNS] = "dns"
        port = self.plan.dns_port
        argv = [sys.executable, "-m", "gossamer", "dns", "--control-plane", self.url]
        argv += ["--token-file", str(self.admin_token_file), "--listen", f"127.0.0.1:{port}"]
        argv += ["--ca-file", str(self.ca_file)]
        argv += ["--vip-network", self.plan.vip_network]
        for forwarder in self.plan.dns_forwarders:
            argv += ["--forward", forwarder]
        return ProcessSpec(
            name=DNS,
            argv=argv,
            log_path=self.logs / f"{DNS}.log",
            readiness=ReadinessProbe(lambda: _listening(port), period_s=PROBE_S, timeout_s=1.0),
            ports=(port,),
        )

    def _vip_proxy(self, token: Path) -> ProcessSpec:
        # Ready once started: a VIP port under 1024 needs privileges the user may not have, and
        # the explicit proxy works without it; a refused listener shows in proxy-status.
        self.kinds[VIP_PROXY] = "vip-proxy"
        argv = self._proxy_argv(VIP_WORKLOAD, GATEWAY_NAMESPACE, token, self.plan.vip_admin_port)
        argv += ["--role", "vip", "--vip-network", self.plan.vip_network]
        return ProcessSpec(
            name=VIP_PROXY, argv=argv, log_path=self.logs / f"{VIP_PROXY}.log", stop_grace_s=6.0
        )

    def _gateway(self, token: Path) -> ProcessSpec:
        assert self.plan.gateway_port is not None and self.plan.gateway_admin_port is not None
        self.kinds[GATEWAY] = "gateway"
        argv = self._proxy_argv(
            GATEWAY_WORKLOAD, GATEWAY_NAMESPACE, token, self.plan.gateway_admin_port
        )
        argv += ["--role", "gateway", "--gateway-port", str(self.plan.gateway_port)]
        # The account its certificate names; asking for `default` first costs a refusal.
        argv += ["--service-account", GATEWAY_SERVICE_ACCOUNT]
        if self.plan.gateway_workers > 1:
            argv += ["--workers", str(self.plan.gateway_workers)]
        if self.plan.gateway_https_port is not None:
            argv += ["--gateway-https-port", str(self.plan.gateway_https_port)]
        if self.plan.gateway_passthrough_port is not None:
            argv += ["--gateway-passthrough-port", str(self.plan.gateway_passthrough_port)]
            argv += ["--secrets-dir", str(self.workdir / "secrets")]
        return ProcessSpec(
            name=GATEWAY,
            argv=argv,
            log_path=self.logs / f"{GATEWAY}.log",
            readiness=_admin_ready(self.plan.gateway_admin_port),
            stop_grace_s=6.0,
            ports=(self.plan.gateway_admin_port, self.plan.gateway_port),
        )

    def _sidecar(self, replica: Replica, token: Path) -> ProcessSpec:
        name = f"{replica.name}.sidecar"
        self.kinds[name] = "sidecar"
        argv = self._proxy_argv(replica.deployment, replica.namespace, token, replica.admin_port)
        argv += ["--outbound-port", str(replica.outbound_port)]
        argv += ["--inbound-port", str(replica.inbound_port)]
        argv += ["--app-port", str(replica.app_port)]
        for port_name, port in replica.tcp_ports:
            argv += ["--tcp-port", f"{port_name}={port}"]
        argv += ["--service-account", replica.service_account, "--pod", replica.pod]
        if replica.readiness is not None and replica.readiness.kind == "http":
            argv += ["--ready-url", f"http://127.0.0.1:{replica.app_port}{replica.readiness.path}"]
        return ProcessSpec(
            name=name,
            argv=argv,
            log_path=self.logs / f"{name}.log",
            readiness=_admin_ready(replica.admin_port),
            stop_grace_s=6.0,
            ports=(replica.admin_port, replica.inbound_port, *(p for _, p in replica.tcp_ports)),
        )

    def _app(self, replica: Replica) -> ProcessSpec:
        self.kinds[replica.name] = "app"
        workdir = self.workdir / replica.working_dir if replica.working_dir else self.workdir
        env = {
            **app_environment(replica, self.workdir, self.config.state / "data"),
            **dns_environment(self.plan),
            **materialize(replica, self.config.state / "volumes"),
        }
        data_folder(self.config.state / "data", replica).mkdir(parents=True, exist_ok=True)
        return ProcessSpec(
            name=replica.name,
            argv=expand_references(replica.argv, env),
            log_path=self.logs / f"{replica.name}.log",
            env=env,
            cwd=workdir,
            readiness=_app_readiness(replica),
            # As in Istio, the app starts with its sidecar unless the pod asks to be held.
            after=(f"{replica.name}.sidecar",) if replica.hold_until_proxy_starts else (),
            restart=_restart_policy(replica),
            restart_limit=replica.backoff_limit,
        )


def _restart_policy(replica: Replica) -> RestartPolicy:
    """A Job retries a failed run whatever its pods' policy: Kubernetes restarts the container
    (OnFailure) or makes a new pod (Never), both up to backoffLimit."""
    if replica.kind == "Job":
        return RestartPolicy.ON_FAILURE
    return RestartPolicy(replica.restart)


def _app_readiness(replica: Replica) -> ReadinessProbe | None:
    probe = replica.readiness
    if probe is None:
        return None
    period = min(probe.period_s, 1.0)  # fast while starting; Kubernetes' period after
    return ReadinessProbe(
        _check(probe, replica.app_port),
        period_s=period,
        timeout_s=probe.timeout_s,
        failure_threshold=probe.failure_threshold,
    )


def _check(probe: Readiness, port: int) -> Any:
    async def http() -> bool:
        return await http_ok(f"http://127.0.0.1:{port}{probe.path}", probe.timeout_s)

    async def tcp() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        return True

    async def command() -> bool:
        process = await asyncio.create_subprocess_exec(
            *probe.command,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PORT": str(port)},
        )
        return await process.wait() == 0

    return {"http": http, "tcp": tcp, "exec": command}[probe.kind]


def _admin_ready(port: int) -> ReadinessProbe:
    return ReadinessProbe(
        lambda: http_ok(f"http://127.0.0.1:{port}/ready", 1.0), period_s=PROBE_S, timeout_s=1.0
    )


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def is_control_plane(port: int, ca_file: Path) -> bool:
    """Whether the control plane answers on `port` with its own identity, verified by the
    mesh's roots (UntrustedServerError says what answered instead)."""
    await verify_control_plane("127.0.0.1", port, ca_file, spiffe=control_plane_spiffe_id())
    return True


def _deployments(items: Sequence[Any]) -> list[Deployment]:
    found = []
    for item in items:
        try:
            found.append(Deployment.model_validate(item))
        except pydantic.ValidationError as error:
            log.warning("ignored a Deployment the model does not accept: %s", error)
    return found


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    staged = path.with_suffix(".tmp")
    staged.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    staged.replace(path)
