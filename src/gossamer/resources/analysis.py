"""Checks across resources, as `istioctl analyze` users expect: references that lead nowhere."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from gossamer.resources.base import Labels
from gossamer.resources.gateway_api_checks import gateway_api_problems
from gossamer.resources.hosts import host_matches, qualify, service_fqdn
from gossamer.resources.kinds.apps import StatefulSet, Workload
from gossamer.resources.kinds.config import Namespace, ServiceAccount
from gossamer.resources.kinds.core import Service
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
from gossamer.resources.loader import LoadedResource
from gossamer.resources.podconfig import ConfigSource, container_env, pod_volumes
from gossamer.resources.problems import Problem, Severity
from gossamer.resources.support import support_key

# Istio's root namespace: a policy there applies mesh-wide, so its selector may match anything.
ROOT_NAMESPACE = "istio-system"
WARNING = Severity.WARNING


@dataclass(slots=True)
class _Index:
    """The resources by the names other resources use to point at them."""

    objects: dict[tuple[str, str, str], LoadedResource] = field(default_factory=dict)
    services: dict[str, LoadedResource] = field(default_factory=dict)
    deployments: dict[str, list[LoadedResource]] = field(default_factory=dict)
    workload_entries: dict[str, list[WorkloadEntry]] = field(default_factory=dict)
    destination_rules: dict[str, list[LoadedResource]] = field(default_factory=dict)
    external_hosts: list[str] = field(default_factory=list)
    gateways: dict[tuple[str, str], LoadedResource] = field(default_factory=dict)
    topics: set[tuple[str, str]] = field(default_factory=set)
    accounts: set[tuple[str, str]] = field(default_factory=set)
    namespaces: set[str] = field(default_factory=set)

    def host_known(self, fqdn: str) -> bool:
        return fqdn in self.services or any(host_matches(p, fqdn) for p in self.external_hosts)

    def selected(
        self, namespace: str, selector: Labels
    ) -> tuple[list[Workload], list[WorkloadEntry]]:
        """The Deployments (by pod labels) and WorkloadEntries a Service selector picks."""
        # A WorkloadEntry is an endpoint too (snapshot/endpoints.py), picked by its own labels.
        deployments = [_as_deployment(loaded) for loaded in self.deployments.get(namespace, [])]
        entries = self.workload_entries.get(namespace, [])
        return (
            [d for d in deployments if _matches(selector, d.pod_labels)],
            [e for e in entries if _matches(selector, e.spec.labels)],
        )


def analyze(resources: Sequence[LoadedResource]) -> list[Problem]:
    """Every cross-resource problem among these resources."""
    index = _Index()
    problems = list(_index(resources, index))
    for loaded in resources:
        resource = loaded.resource
        if isinstance(resource, VirtualService):
            problems.extend(_virtual_service(loaded, resource, index))
        elif isinstance(resource, Service):
            problems.extend(_service(loaded, resource, index))
        elif isinstance(resource, DestinationRule):
            problems.extend(_destination_rule(loaded, resource, index))
        elif isinstance(resource, Ingress | IngressV1Beta1):
            problems.extend(_ingress(loaded, resource, index))
        elif isinstance(resource, PeerAuthentication | AuthorizationPolicy | RequestAuthentication):
            problems.extend(_policy_selector(loaded, resource, index))
        elif isinstance(resource, Topic):
            problems.extend(_topic(loaded, resource, index))
        elif isinstance(resource, ApiProduct):
            problems.extend(
                _gateway_refs(
                    loaded,
                    loaded.resource.namespace,
                    resource.spec.gateways,
                    ("spec", "gateways"),
                    index,
                )
            )
    problems.extend(_host_conflicts(resources))
    problems.extend(_undeclared_namespaces(resources, index))
    problems.extend(gateway_api_problems(resources))
    source = ConfigSource.of(loaded.resource for loaded in resources)
    for loaded in resources:
        if isinstance(loaded.resource, Workload):
            problems.extend(_pod_references(loaded, loaded.resource, source, index))
            if isinstance(loaded.resource, StatefulSet):
                problems.extend(_governing_service(loaded, loaded.resource, index))
        elif isinstance(loaded.resource, ApiProduct) and loaded.resource.spec.openapi:
            problems.extend(_api_documents(loaded, loaded.resource, source))
    return problems


def _index(resources: Sequence[LoadedResource], index: _Index) -> Iterator[Problem]:
    for loaded in resources:
        resource = loaded.resource
        key = (support_key(type(resource)), loaded.namespace, loaded.name)
        if key in index.objects:
            first = index.objects[key]
            yield loaded.problem(
                ("metadata", "name"),
                f"{resource.KIND} {key[1]}/{key[2]} is already defined at {first.where}",
                code="duplicate-object",
            )
            continue
        index.objects[key] = loaded
        if isinstance(resource, Service):
            index.services[service_fqdn(loaded.name, loaded.namespace)] = loaded
        elif isinstance(resource, ServiceAccount):
            index.accounts.add((loaded.namespace, loaded.name))
        elif isinstance(resource, Namespace):
            index.namespaces.add(loaded.name)
        elif isinstance(resource, Workload):
            index.deployments.setdefault(loaded.namespace, []).append(loaded)
        elif isinstance(resource, WorkloadEntry):
            index.workload_entries.setdefault(loaded.namespace, []).append(resource)
        elif isinstance(resource, DestinationRule):
            host = qualify(resource.spec.host, loaded.namespace)
            index.destination_rules.setdefault(host, []).append(loaded)
        elif isinstance(resource, ServiceEntry):
            index.external_hosts.extend(resource.spec.hosts)
        elif isinstance(resource, Gateway):
            index.gateways[(loaded.namespace, loaded.name)] = loaded
        elif isinstance(resource, Topic):
            index.topics.add((loaded.namespace, loaded.name))


def _virtual_service(
    loaded: LoadedResource, service: VirtualService, index: _Index
) -> Iterator[Problem]:
    for path, destination in service.destinations():
        host = qualify(destination.host, loaded.namespace)
        if not index.host_known(host):
            yield loaded.problem(
                (*path, "host"),
                f"no Service or ServiceEntry is named {destination.host} ({host})",
                WARNING,
                "unknown-host",
            )
            continue
        target = index.services.get(host)
        if destination.port is not None and destination.port.number is not None and target:
            ports = [p.port for p in _as_service(target).spec.ports]
            if destination.port.number not in ports:
                yield loaded.problem(
                    (*path, "port", "number"),
                    f"Service {target.name} has no port {destination.port.number} "
                    f"(ports: {', '.join(map(str, ports)) or 'none'})",
                    WARNING,
                    "unknown-port",
                )
        if destination.subset is not None:
            yield from _subset(loaded, (*path, "subset"), host, destination.subset, index)
    yield from _gateway_refs(
        loaded,
        loaded.namespace,
        [g for g in service.spec.gateways if g != "mesh"],
        ("spec", "gateways"),
        index,
    )


def _subset(
    loaded: LoadedResource, path: tuple[str | int, ...], host: str, subset: str, index: _Index
) -> Iterator[Problem]:
    rules = index.destination_rules.get(host, [])
    if not rules:
        yield loaded.problem(
            path,
            f"subset {subset} needs a DestinationRule for {host} that defines it; "
            "requests to this route would fail",
            code="unknown-subset",
        )
        return
    for rule in rules:
        if any(s.name == subset for s in _as_rule(rule).spec.subsets):
            return
    names = ", ".join(s.name for r in rules for s in _as_rule(r).spec.subsets) or "none"
    yield loaded.problem(
        path,
        f"DestinationRule {rules[0].name} ({rules[0].where}) defines no subset {subset} "
        f"(subsets: {names}); requests to this route would fail",
        code="unknown-subset",
    )


def _gateway_refs(
    loaded: LoadedResource,
    namespace: str,
    names: Sequence[str],
    path: tuple[str | int, ...],
    index: _Index,
) -> Iterator[Problem]:
    for position, name in enumerate(names):
        ns, _, short = name.rpartition("/")
        if (ns or namespace, short) not in index.gateways:
            yield loaded.problem(
                (*path, position),
                f"no Gateway named {short} in namespace {ns or namespace}",
                WARNING,
                "unknown-gateway",
            )


def _service(loaded: LoadedResource, service: Service, index: _Index) -> Iterator[Problem]:
    selector = service.spec.selector
    if not selector:
        return
    deployments, entries = index.selected(loaded.namespace, selector)
    if not deployments and not entries:
        yield loaded.problem(
            ("spec", "selector"),
            f"matches no Deployment or WorkloadEntry in namespace {loaded.namespace}, "
            "so the Service has no endpoints",
            WARNING,
            "selector-matches-nothing",
        )
        return
    port_names = {
        port.name
        for deployment in deployments
        for container in deployment.template.spec.containers
        for port in container.ports
        if port.name
    }
    for position, port in enumerate(service.spec.ports):
        target = port.target_port
        if not isinstance(target, str) or target in port_names:
            continue
        if any(_entry_takes(entry, port.name or "", target) for entry in entries):
            continue
        holders = ["no container of the selected Deployments"] if deployments else []
        holders += ["no selected WorkloadEntry"] if entries else []
        yield loaded.problem(
            ("spec", "ports", position, "targetPort"),
            f"{' and '.join(holders)} names a port {target}",
            WARNING,
            "unknown-port",
        )


def _entry_takes(entry: WorkloadEntry, name: str, target: str) -> bool:
    """Whether an entry takes a service port whose targetPort is a name, as endpoints.py decides.

    It does with a port under the service port's name or the target's, or a sidecar that takes
    every port.
    """
    ports = entry.spec.ports
    return name in ports or entry.inbound_port is not None or target in ports


def _destination_rule(
    loaded: LoadedResource, rule: DestinationRule, index: _Index
) -> Iterator[Problem]:
    host = qualify(rule.spec.host, loaded.namespace)
    if "*" in host:
        return
    if not index.host_known(host):
        yield loaded.problem(
            ("spec", "host"),
            f"no Service or ServiceEntry is named {rule.spec.host} ({host})",
            WARNING,
            "unknown-host",
        )
        return
    target = index.services.get(host)
    if target is None:
        return
    deployments, entries = index.selected(target.namespace, _as_service(target).spec.selector or {})
    endpoints = [d.pod_labels for d in deployments] + [e.spec.labels for e in entries]
    for position, subset in enumerate(rule.spec.subsets):
        if subset.labels and not any(_matches(subset.labels, labels) for labels in endpoints):
            yield loaded.problem(
                ("spec", "subsets", position, "labels"),
                f"no replica or WorkloadEntry of Service {target.name} carries these labels, "
                f"so subset {subset.name} has no endpoints",
                WARNING,
                "subset-matches-nothing",
            )


def _ingress(
    loaded: LoadedResource, ingress: Ingress | IngressV1Beta1, index: _Index
) -> Iterator[Problem]:
    for route in ingress.routes():
        if route.service is None:
            continue
        host = service_fqdn(route.service, loaded.namespace)
        target = index.services.get(host)
        field_name = "service" if isinstance(ingress, Ingress) else "serviceName"
        if target is None:
            yield loaded.problem(
                (*route.path, field_name),
                f"no Service named {route.service} in namespace {loaded.namespace}",
                WARNING,
                "unknown-service",
            )
            continue
        ports = _as_service(target).spec.ports
        if route.port is not None and not any(route.port in (p.port, p.name) for p in ports):
            known = ", ".join(str(p.port) + (f" ({p.name})" if p.name else "") for p in ports)
            yield loaded.problem(
                route.path,
                f"Service {route.service} has no port {route.port} (ports: {known or 'none'})",
                WARNING,
                "unknown-port",
            )


def _policy_selector(
    loaded: LoadedResource,
    policy: PeerAuthentication | AuthorizationPolicy | RequestAuthentication,
    index: _Index,
) -> Iterator[Problem]:
    selector = policy.spec.selector
    if selector is None or not selector.match_labels or loaded.namespace == ROOT_NAMESPACE:
        return
    deployments = index.deployments.get(loaded.namespace, [])
    if not any(
        all(_as_deployment(d).pod_labels.get(k) == v for k, v in selector.match_labels.items())
        for d in deployments
    ):
        yield loaded.problem(
            ("spec", "selector", "matchLabels"),
            f"matches no Deployment in namespace {loaded.namespace}, so the policy applies to "
            "nothing",
            WARNING,
            "selector-matches-nothing",
        )


def _pod_references(
    loaded: LoadedResource, workload: Workload, source: ConfigSource, index: _Index
) -> Iterator[Problem]:
    """ConfigMaps, Secrets and keys the pods read must exist (errors: the pod would not start,
    unless the reference says `optional: true`); so must the account, when the files declare
    ServiceAccounts in that namespace (those that declare none leave accounts to the cluster)."""
    pod = workload.template.spec
    path = ("spec", "template", "spec")
    namespace = loaded.namespace
    for group in ("containers", "initContainers"):
        for position, container in enumerate(getattr(pod, _snake(group))):
            env = container_env(container, namespace, source, None, (*path, group, position))
            for missing in env.missing:
                yield loaded.problem(missing.path, missing.message, code="missing-reference")
    _, missing_files = pod_volumes(pod, namespace, source, path)
    for missing in missing_files:
        yield loaded.problem(missing.path, missing.message, code="missing-reference")
    account = pod.account
    declares = any(ns == namespace for ns, _ in index.accounts)
    if account != "default" and declares and (namespace, account) not in index.accounts:
        field_name = "serviceAccountName" if pod.service_account_name else "serviceAccount"
        yield loaded.problem(
            (*path, field_name),
            f"no ServiceAccount named {account} in namespace {namespace}; Kubernetes would "
            "refuse the pods",
            WARNING,
            "unknown-service-account",
        )


# Namespaces every cluster has (and Istio's, which its install creates).
_BUILT_IN_NAMESPACES = frozenset(
    {"default", "kube-system", "kube-public", "kube-node-lease", "istio-system"}
)


def _undeclared_namespaces(resources: Sequence[LoadedResource], index: _Index) -> Iterator[Problem]:
    """When the files declare Namespaces, an object in one they do not declare (kubectl would
    refuse it: namespace not found). Files that declare none leave namespaces to the cluster."""
    if not index.namespaces:
        return
    for loaded in resources:
        namespace = loaded.namespace
        if isinstance(loaded.resource, Namespace) or not namespace:
            continue
        if namespace not in index.namespaces and namespace not in _BUILT_IN_NAMESPACES:
            yield loaded.problem(
                ("metadata", "namespace"),
                f"no Namespace {namespace} in the files, which declare "
                f"{', '.join(sorted(index.namespaces))}; Kubernetes would refuse the object",
                WARNING,
                "unknown-namespace",
            )


def _governing_service(
    loaded: LoadedResource, workload: StatefulSet, index: _Index
) -> Iterator[Problem]:
    """A StatefulSet's `serviceName` should name a Service: without it the replicas get no DNS
    names of their own (NAME-i.SERVICE...)."""
    name = workload.spec.service_name
    if name and service_fqdn(name, loaded.namespace) not in index.services:
        yield loaded.problem(
            ("spec", "serviceName"),
            f"no Service {name} in namespace {loaded.namespace}: the replicas get no DNS names "
            "of their own",
            WARNING,
            "unknown-service",
        )


def _api_documents(
    loaded: LoadedResource, product: ApiProduct, source: ConfigSource
) -> Iterator[Problem]:
    """Each OpenAPI document the product names exists and is OpenAPI 3 (else the gateway serves
    no documentation for it at all)."""
    from gossamer.apidocs.spec import product_documents  # noqa: PLC0415 - yaml and the page

    _, problems = product_documents(product, source)
    for position, message in problems:
        where = ("spec", "openapi", "specs", position, "configMapKeyRef")
        yield loaded.problem(where, message, code="bad-openapi")


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _topic(loaded: LoadedResource, topic: Topic, index: _Index) -> Iterator[Problem]:
    dead = topic.spec.dead_letter
    if dead is not None and (loaded.namespace, dead.topic) not in index.topics:
        yield loaded.problem(
            ("spec", "deadLetter", "topic"),
            f"no Topic named {dead.topic} in namespace {loaded.namespace}",
            WARNING,
            "unknown-topic",
        )


def _host_conflicts(resources: Sequence[LoadedResource]) -> Iterator[Problem]:
    # Inside the mesh a host has one routing table; two VirtualServices for it are ambiguous.
    claimed: dict[str, LoadedResource] = {}
    for loaded in resources:
        service = loaded.resource
        if not isinstance(service, VirtualService):
            continue
        if service.spec.gateways and "mesh" not in service.spec.gateways:
            continue
        for position, host in enumerate(service.spec.hosts):
            fqdn = qualify(host, loaded.namespace)
            first = claimed.get(fqdn)
            if first is not None and first is not loaded:
                yield loaded.problem(
                    ("spec", "hosts", position),
                    f"host {host} is also routed by VirtualService {first.name} ({first.where}); "
                    "inside the mesh one VirtualService must own a host",
                    code="conflicting-hosts",
                )
            claimed.setdefault(fqdn, loaded)


def _matches(selector: Labels, labels: Labels) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _as_service(loaded: LoadedResource) -> Service:
    assert isinstance(loaded.resource, Service)
    return loaded.resource


def _as_rule(loaded: LoadedResource) -> DestinationRule:
    assert isinstance(loaded.resource, DestinationRule)
    return loaded.resource


def _as_deployment(loaded: LoadedResource) -> Workload:
    assert isinstance(loaded.resource, Workload)
    return loaded.resource
