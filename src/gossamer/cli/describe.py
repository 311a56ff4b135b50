"""`gossamer describe KIND NAME`: one object for people to read.

The output is a list of sections, each a function of the `Described` object: its metadata, its
spec, and for a VirtualService or Service the routes a sidecar in its namespace has for it.
A section with nothing to say prints nothing; one that needs more than the object fetches it
through `Described`, which keeps what was fetched for the sections after it. A section about the
proxies that run the object (from the control plane's `/debug/v1/proxies`) belongs here too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gossamer.cli.session import (
    Namespace,
    Server,
    Session,
    Token,
    namespace_or_default,
    open_session,
)

if TYPE_CHECKING:
    from gossamer.cli.served_objects import ServedObjects
    from gossamer.control.api.catalog import ServedResource

_LABEL = 14


class Described:
    """The object being described, and the session to fetch more with."""

    def __init__(self, session: Session, served: ServedResource, data: Mapping[str, Any]) -> None:
        self.session = session
        self.served = served
        self.data = data
        metadata = data.get("metadata")
        self.metadata: Mapping[str, Any] = metadata if isinstance(metadata, dict) else {}
        self.name = str(self.metadata.get("name", ""))
        self.namespace = str(self.metadata.get("namespace") or "default")

    def __repr__(self) -> str:
        return f"<Described {self.served.kind} {self.namespace}/{self.name}>"

    @cached_property
    def everything(self) -> ServedObjects:
        """Every object the server holds, typed (listed once, when a section first asks)."""
        from gossamer.cli.served_objects import list_everything

        return list_everything(self.session.client, self.session.names)


Section = Callable[[Described], list[str]]
"""Lines about the described object; none when the section does not apply."""


def describe(
    kind: Annotated[
        str,
        typer.Argument(
            help="Kind: VirtualService, vs, Service, svc, ... (or KIND/NAME); `workload` is a "
            "Deployment with its identity, mTLS mode and policies."
        ),
    ],
    name: Annotated[str | None, typer.Argument(help="Name of the object.")] = None,
    namespace: Namespace = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Show one object readably; for a VirtualService or Service, also its effective routes."""
    from gossamer.cli.resource_names import split_kind_name

    kind, name = split_kind_name(kind, name)
    if name is None:
        raise typer.BadParameter("give KIND and NAME")
    if kind.lower() in ("workload", "workloads"):
        kind = "Deployment"
    with open_session(server, token) as session:
        served = session.resolve(kind)
        data = session.client.get(served, namespace_or_default(namespace), name)
        described = Described(session, served, data)
        blocks = [lines for section in SECTIONS if (lines := section(described))]
    typer.echo("\n\n".join("\n".join(block) for block in blocks))


def metadata_section(described: Described) -> list[str]:
    """Name, namespace, kind, labels, annotations, age and versions."""
    from gossamer.cli.columns import age

    metadata = described.metadata
    created = metadata.get("creationTimestamp")
    when = f"{created} ({age(created, datetime.now(UTC))} ago)" if created else "<unknown>"
    return [
        _field("Name", described.name),
        _field("Namespace", described.namespace),
        _field("Kind", f"{described.served.kind} ({described.data.get('apiVersion')})"),
        *_mapping_field("Labels", metadata.get("labels")),
        *_mapping_field("Annotations", metadata.get("annotations")),
        _field("Created", when),
        _field("Generation", str(metadata.get("generation", "<none>"))),
        _field("Version", str(metadata.get("resourceVersion", "<none>"))),
    ]


def spec_section(described: Described) -> list[str]:
    """Everything but identity and metadata, as YAML under a capitalised heading."""
    from gossamer.cli.served_objects import object_yaml

    lines = []
    for key, value in described.data.items():
        if key in ("apiVersion", "kind", "metadata"):
            continue
        lines.append(f"{key[:1].upper()}{key[1:]}:")
        lines += ["  " + line for line in object_yaml(value).splitlines()]
    return lines


def routes_section(described: Described) -> list[str]:
    """For a VirtualService or Service: what a sidecar in its namespace routes for its hosts."""
    from gossamer.cli.effective_routes import route_lines, sidecar_hosts

    hosts = _routed_hosts(described)
    if hosts is None:
        return []
    namespace = described.namespace
    heading = f"Routes (what a sidecar in namespace {namespace} does with requests for it):"
    gateways = _bound_gateways(described)
    if gateways and "mesh" not in gateways:
        return [heading, f"  none: it is bound to gateways {', '.join(gateways)}, not to mesh"]
    resources = [loaded.resource for loaded in described.everything.resources]
    virtual_hosts = sidecar_hosts(resources, namespace, hosts)
    if not virtual_hosts:
        named = ", ".join(hosts)
        return [heading, f"  none: no Service or ServiceEntry named {named} is visible here"]
    lines = [heading]
    for virtual_host in virtual_hosts:
        lines.append(f"  {virtual_host.name}")
        for route in virtual_host.routes:
            # VirtualService routes are named NAMESPACE/NAME/RULE; the only other is the default.
            name = route.name if "/" in route.name else f"{route.name} (no VirtualService)"
            lines.append(f"    {name}")
            lines += ["      " + line for line in route_lines(route)]
    return lines


def _routed_hosts(described: Described) -> list[str] | None:
    kind = described.served.kind
    if kind == "Service":
        return [described.name]
    if kind == "VirtualService":
        spec = described.data.get("spec") or {}
        return [str(host) for host in spec.get("hosts") or []]
    return None


def _bound_gateways(described: Described) -> list[str]:
    if described.served.kind != "VirtualService":
        return []
    spec = described.data.get("spec") or {}
    return [str(gateway) for gateway in spec.get("gateways") or []]


def proxies_section(described: Described) -> list[str]:
    """The connected proxies that run the object: a Deployment's own sidecars; for what routes
    (Service, VirtualService, DestinationRule), every sidecar and the gateways and VIP proxy."""
    kind = described.served.kind
    if kind not in ("Deployment", "Service", "VirtualService", "DestinationRule", "Gateway"):
        return []
    proxies = described.session.client.proxies()
    if proxies is None:
        return []
    if kind == "Deployment":
        chosen = [
            p
            for p in proxies
            if p["workload"] == described.name and p["namespace"] == described.namespace
        ]
    elif kind == "Gateway":
        chosen = [p for p in proxies if p["role"] == "gateway"]
    else:
        chosen = list(proxies)
    lines = ["Proxies (connected now: name, role, state, version acknowledged):"]
    if not chosen:
        return [*lines, "  none"]
    for proxy in chosen:
        error = f"  {proxy['error']}" if proxy["error"] else ""
        version = proxy["acked"] or "-"
        lines.append(f"  {proxy['proxy']}  {proxy['role']}  {proxy['state']}  {version}{error}")
    return lines


def security_section(described: Described) -> list[str]:
    """For a Deployment: its SPIFFE id, effective mTLS mode, certificates, and the policies."""
    if described.served.kind != "Deployment":
        return []
    from gossamer.resources.kinds.apps import Deployment
    from gossamer.snapshot.translate_security import SecurityIndex

    resources = [loaded.resource for loaded in described.everything.resources]
    found = next(
        (
            r
            for r in resources
            if isinstance(r, Deployment)
            and r.name == described.name
            and r.namespace == described.namespace
        ),
        None,
    )
    if found is None:
        return []
    pod = found.spec.template.spec
    account = pod.service_account_name or pod.service_account or "default"
    labels = dict(found.pod_labels)
    index = SecurityIndex(resources)
    mtls = index.mtls(described.namespace, labels)
    security = index.for_workload(described.namespace, labels)
    identity = f"spiffe://{security.trust_domain}/ns/{described.namespace}/sa/{account}"
    ports = "".join(f"; port {port}: {mode}" for port, mode in mtls.ports)
    lines = [
        "Security:",
        _sub("Identity", identity),
        _sub("mTLS", f"{mtls.mode}{ports} (effective PeerAuthentication)"),
    ]
    lines += _certificate_lines(described)
    policies = security.authorization
    lines.append("  Authorization:")
    if not policies:
        lines.append("    none: every request is allowed")
    for policy in sorted(policies, key=lambda p: ("DENY", "ALLOW", "AUDIT").index(p.action)):
        rules = f"{len(policy.rules)} rule{'s' if len(policy.rules) != 1 else ''}"
        lines.append(f"    {policy.action:<6} {policy.name} ({rules})")
    if any(policy.action == "ALLOW" for policy in policies):
        lines.append("    (an ALLOW policy applies: a request none of them allows is denied)")
    lines.append("  Request authentication:")
    if not security.jwt:
        lines.append("    none")
    for provider in security.jwt:
        keys = provider.jwks_uri or "inline jwks"
        audiences = ", ".join(provider.audiences) or "any audience"
        lines.append(f"    {provider.policy}: issuer {provider.issuer} ({keys}; {audiences})")
    return lines


def _certificate_lines(described: Described) -> list[str]:
    proxies = described.session.client.proxies()
    if proxies is None:
        return [_sub("Certificates", "unknown (the control plane lists no proxies)")]
    mine = [
        p
        for p in proxies
        if p["workload"] == described.name and p["namespace"] == described.namespace
    ]
    if not mine:
        return [_sub("Certificates", "none: no proxy of this workload is connected")]
    from gossamer.cli.columns import time_left

    lines = ["  Certificates (of each connected proxy):"]
    now = time.time()
    for proxy in mine:
        expiry = float(proxy.get("certificateExpiry") or 0)
        if not expiry:
            lines.append(f"    {proxy['proxy']}  none (mTLS off, or not signed)")
            continue
        left = time_left(expiry, now)
        remaining = left if left == "EXPIRED" else f"in {left}"
        stamp = datetime.fromtimestamp(expiry, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(
            f"    {proxy['proxy']}  {proxy.get('identity')}  expires {stamp} ({remaining})"
        )
    return lines


SECTIONS: tuple[Section, ...] = (
    metadata_section,
    spec_section,
    routes_section,
    security_section,
    proxies_section,
)


def _sub(label: str, value: str) -> str:
    """A field inside a section, indented."""
    return f"  {label + ':':<{_LABEL + 2}}{value}"


def _field(label: str, value: str) -> str:
    return f"{label + ':':<{_LABEL}}{value}"


def _mapping_field(label: str, values: object) -> list[str]:
    if not isinstance(values, dict) or not values:
        return [_field(label, "<none>")]
    pairs = [f"{key}={value}" for key, value in values.items()]
    return [_field(label, pairs[0]), *(" " * _LABEL + pair for pair in pairs[1:])]
