"""Service host names: short names made fully qualified, and Istio-style wildcard host matching."""

from __future__ import annotations

DEFAULT_DOMAIN = "cluster.local"


def service_fqdn(name: str, namespace: str, domain: str = DEFAULT_DOMAIN) -> str:
    """The DNS name of a Service: `reviews` in `default` -> `reviews.default.svc.cluster.local`."""
    return f"{name}.{namespace}.svc.{domain}"


def qualify(host: str, namespace: str, domain: str = DEFAULT_DOMAIN) -> str:
    """A host as a rule writes it, made fully qualified the way Kubernetes DNS search would.

    `reviews` and `reviews.prod` name Services; `reviews.prod.svc` gains the cluster domain;
    anything else (`api.example.com`, `*.example.com`) is already a full name.
    """
    parts = host.split(".")
    if "*" in host:
        return host
    if len(parts) == 1:
        return service_fqdn(host, namespace, domain)
    if len(parts) == 2:
        return service_fqdn(parts[0], parts[1], domain)
    if len(parts) == 3 and parts[2] == "svc":
        return f"{host}.{domain}"
    return host


def host_matches(pattern: str, host: str) -> bool:
    """Whether `host` is covered by `pattern`, where `*.example.com` covers one or more labels."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return pattern == host
