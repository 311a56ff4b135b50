"""Which fields Gossamer acts on; the rest load and keep their value, and `--strict` names them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel

from gossamer.resources.base import Resource
from gossamer.resources.loader import LoadedResource
from gossamer.resources.problems import Problem, Severity
from gossamer.resources.yamlsource import FieldPath

NOT_ENFORCED = "accepted, not enforced yet"


def _at(prefix: str, fields: Iterable[str] = ()) -> frozenset[str]:
    """`prefix` and each of `fields` below it."""
    return frozenset({prefix, *(f"{prefix}.{name}" for name in fields)})


def _each(prefixes: Iterable[str], fields: Iterable[str]) -> frozenset[str]:
    """The same fields below each of several prefixes, e.g. a StringMatch wherever one appears."""
    below = tuple(fields)
    return frozenset[str]().union(*(_at(prefix, below) for prefix in prefixes))


_STRING_MATCH = ("exact", "prefix", "regex")
_DESTINATION = ("host", "subset", "port", "port.number")
_HEADER_OPERATIONS = (
    "request",
    "request.set",
    "request.add",
    "request.remove",
    "response",
    "response.set",
    "response.add",
    "response.remove",
)

# `gossamer up` runs a replica as its first container's process (runtime/plan.py), with the pod's
# identity and labels, and probes readiness on the app's one port: a probe's own port, host and
# scheme are not used. Named container ports give the inbound ports of a sidecar that is told no
# app port (snapshot/translate.py). ConfigMaps and Secrets reach the process as environment
# variables and as files (runtime/volumes.py), and so do the Downward API's fields; downwardAPI
# and projected volumes (their configMap, secret and downwardAPI sources) are written as files.
_KEY_REF = ("name", "key", "optional")
_CONTAINER = (
    "command",
    "args",
    "workingDir",
    "env",
    "env.name",
    "env.value",
    "env.valueFrom",
    *(f"env.valueFrom.configMapKeyRef{f'.{name}' if name else ''}" for name in ("", *_KEY_REF)),
    *(f"env.valueFrom.secretKeyRef{f'.{name}' if name else ''}" for name in ("", *_KEY_REF)),
    "env.valueFrom.fieldRef",
    "env.valueFrom.fieldRef.apiVersion",
    "env.valueFrom.fieldRef.fieldPath",
    "envFrom",
    "envFrom.prefix",
    "envFrom.configMapRef",
    "envFrom.configMapRef.name",
    "envFrom.configMapRef.optional",
    "envFrom.secretRef",
    "envFrom.secretRef.name",
    "envFrom.secretRef.optional",
    "volumeMounts",
    "volumeMounts.name",
    "volumeMounts.mountPath",
    "volumeMounts.subPath",
    "ports",
    "ports.name",
    "ports.containerPort",
    "readinessProbe",
    "readinessProbe.httpGet",
    "readinessProbe.httpGet.path",
    "readinessProbe.tcpSocket",
    "readinessProbe.exec",
    "readinessProbe.exec.command",
    "readinessProbe.periodSeconds",
    "readinessProbe.timeoutSeconds",
    "readinessProbe.failureThreshold",
)
_FILES = ("items", "items.key", "items.path", "items.mode", "defaultMode", "optional")


def _pod(template: str, *more: str) -> frozenset[str]:
    """What `up` reads of a pod template at `template`, and `more` of its spec."""
    spec = f"{template}.spec"
    return (
        _at(template, ("metadata", "metadata.labels", "spec"))
        | _at(spec, ("serviceAccountName", "serviceAccount", "volumes", *more))
        | _at(f"{spec}.containers", _CONTAINER)
        | _at(f"{spec}.volumes", ("name", "configMap", "secret", "emptyDir"))
        | _at(f"{spec}.volumes", ("downwardAPI", "projected"))
        | _at(f"{spec}.volumes.configMap", ("name", *_FILES))
        | _at(f"{spec}.volumes.secret", ("secretName", *_FILES))
    )


_DEPLOYMENT = _at("spec", ("replicas", "template")) | _pod("spec.template")
# A StatefulSet's replicas are NAME-0, NAME-1; with serviceName, each has its own DNS name.
_STATEFUL_SET = _at("spec", ("replicas", "template", "serviceName")) | _pod("spec.template")
# A Job's pods run until they succeed; OnFailure and Never both retry up to backoffLimit.
_JOB = _at("spec", ("template", "completions", "backoffLimit")) | _pod(
    "spec.template", "restartPolicy"
)
_CONFIG_MAP = frozenset({"data", "binaryData", "immutable"})
_SECRET = frozenset({"data", "stringData", "type", "immutable"})

# A Service is a mesh host (snapshot/translate_catalog.py) with endpoints by selector
# (snapshot/endpoints.py), a virtual IP (snapshot/vips.py) and DNS answers (discovery/catalog.py).
_SERVICE = _at("spec", ("selector", "clusterIP", "type", "externalName")) | _at(
    "spec.ports", ("name", "protocol", "appProtocol", "port", "targetPort")
)

# Ingress paths are gateway routes (snapshot/translate_gateway.py); both versions share the kind,
# each naming its backends its own way. Every Ingress is served, whatever its class.
_INGRESS_V1_BACKEND = (
    "service",
    "service.name",
    "service.port",
    "service.port.name",
    "service.port.number",
)
_INGRESS = (
    _at("spec.defaultBackend", _INGRESS_V1_BACKEND)
    | _at("spec.backend", ("serviceName", "servicePort"))
    | _at("spec.rules", ("host", "http"))
    | _at("spec.rules.http.paths", ("path", "pathType"))
    | _at("spec.rules.http.paths.backend", (*_INGRESS_V1_BACKEND, "serviceName", "servicePort"))
)

# VirtualService HTTP rules are routes (snapshot/translate_routes.py), their CORS policies
# answered by the proxy (proxy/cors.py); tcp rules pick the clusters of opaque TCP listeners
# (snapshot/translate_tcp.py), tls rules route PASSTHROUGH Gateway servers by SNI
# (snapshot/translate_passthrough.py); delegation and session persistence are not translated.
_MATCH = (
    "name",
    "port",
    "sourceLabels",
    "gateways",
    "ignoreUriCase",
    "sourceNamespace",
)
_MATCH_STRINGS = (
    "uri",
    "scheme",
    "method",
    "authority",
    "headers",
    "queryParams",
    "withoutHeaders",
)
_FAULT = (
    "delay",
    "delay.fixedDelay",
    "delay.percentage",
    "delay.percentage.value",
    "delay.percent",
    "abort",
    "abort.httpStatus",
    "abort.percentage",
    "abort.percentage.value",
)
_CORS = (
    "allowOrigins",
    "allowOrigin",
    "allowMethods",
    "allowHeaders",
    "exposeHeaders",
    "maxAge",
    "allowCredentials",
    "unmatchedPreflights",
)
_VIRTUAL_SERVICE = (
    _at("spec", ("hosts", "gateways", "exportTo", "http", "tcp", "tls"))
    | _at("spec.tls", ("match", "route"))
    | _at("spec.tls.match", ("sniHosts", "port", "gateways"))
    | _at("spec.tls.route", ("weight",))
    | _at("spec.tls.route.destination", _DESTINATION)
    | _at("spec.tcp", ("match", "route"))
    | _at("spec.tcp.match", ("port", "sourceLabels", "gateways", "sourceNamespace"))
    | _at("spec.tcp.route", ("weight",))
    | _at("spec.tcp.route.destination", _DESTINATION)
    | _at("spec.http", ("name", "timeout", "mirrorPercent"))
    | _at("spec.http.match", _MATCH)
    | _each((f"spec.http.match.{name}" for name in _MATCH_STRINGS), _STRING_MATCH)
    | _at("spec.http.route", ("weight",))
    | _at("spec.http.route.destination", _DESTINATION)
    | _each(("spec.http.route.headers", "spec.http.headers"), _HEADER_OPERATIONS)
    | _at("spec.http.redirect", ("uri", "authority", "port", "scheme", "redirectCode"))
    | _at("spec.http.directResponse", ("status", "body", "body.string", "body.bytes"))
    | _at("spec.http.rewrite", ("uri", "authority", "uriRegexRewrite"))
    | _at("spec.http.rewrite.uriRegexRewrite", ("match", "rewrite"))
    | _at("spec.http.retries", ("attempts", "perTryTimeout", "retryOn", "backoff"))
    | _at("spec.http.fault", _FAULT)
    | _at("spec.http.mirror", _DESTINATION)
    | _at("spec.http.mirrorPercentage", ("value",))
    | _at("spec.http.mirrors", ("percentage", "percentage.value"))
    | _at("spec.http.mirrors.destination", _DESTINATION)
    | _at("spec.http.corsPolicy", _CORS)
    | _at("spec.http.corsPolicy.allowOrigins", _STRING_MATCH)
)

# DestinationRule policies are cluster settings (snapshot/translate_clusters.py). Not read: TLS,
# tunnels, the PROXY protocol, locality and warmup, ring sizes, a hash cookie's ttl and path, TCP
# keepalive and maximum connection duration, and outlier detection's interval (the proxy counts
# errors on every response).
_POLICY_PARTS = (
    "loadBalancer",
    "loadBalancer.simple",
    "loadBalancer.consistentHash",
    "loadBalancer.consistentHash.httpHeaderName",
    "loadBalancer.consistentHash.httpCookie",
    "loadBalancer.consistentHash.httpCookie.name",
    "loadBalancer.consistentHash.useSourceIp",
    "loadBalancer.consistentHash.httpQueryParameterName",
    "connectionPool",
    "connectionPool.tcp",
    "connectionPool.tcp.maxConnections",
    "connectionPool.tcp.connectTimeout",
    "connectionPool.tcp.idleTimeout",
    "connectionPool.http",
    "connectionPool.http.http1MaxPendingRequests",
    "connectionPool.http.http2MaxRequests",
    "connectionPool.http.maxRequestsPerConnection",
    "connectionPool.http.maxRetries",
    "connectionPool.http.idleTimeout",
    "outlierDetection",
    "outlierDetection.consecutiveErrors",
    "outlierDetection.consecutive5xxErrors",
    "outlierDetection.consecutiveGatewayErrors",
    "outlierDetection.baseEjectionTime",
    "outlierDetection.maxEjectionPercent",
)
_TRAFFIC_POLICY = (
    *_POLICY_PARTS,
    "retryBudget",
    "retryBudget.percent",
    "retryBudget.minRetryConcurrency",
    "portLevelSettings",
    "portLevelSettings.port",
    "portLevelSettings.port.number",
    *(f"portLevelSettings.{part}" for part in _POLICY_PARTS),
)
_DESTINATION_RULE = (
    _at("spec", ("host", "exportTo", "workloadSelector", "workloadSelector.matchLabels"))
    | _at("spec.subsets", ("name", "labels"))
    | _each(("spec.trafficPolicy", "spec.subsets.trafficPolicy"), _TRAFFIC_POLICY)
)

# The ingress gateway serves a Gateway's plain HTTP servers (snapshot/translate_gateway.py).
_GATEWAY = _at("spec", ("selector", "servers")) | _at(
    "spec.servers",
    ("port", "port.number", "port.protocol", "hosts", "tls", "tls.httpsRedirect", "tls.mode"),
)

# ServiceEntry hosts, with their endpoints or the WorkloadEntries they select
# (snapshot/translate_catalog.py, endpoints.py). An endpoint keeps its locality, but nothing
# balances by locality yet.
_SERVICE_ENTRY = (
    _at("spec", ("hosts", "resolution", "exportTo", "workloadSelector"))
    | _at("spec.workloadSelector", ("labels",))
    | _at("spec.ports", ("number", "protocol", "name", "targetPort"))
    | _at("spec.endpoints", ("address", "ports", "labels", "weight"))
)

# A WorkloadEntry is an endpoint of the services that select it (snapshot/endpoints.py), unless
# the Healthy condition Istio's health checks write in its status is False.
_WORKLOAD_ENTRY = _at("spec", ("address", "ports", "labels", "weight")) | _at(
    "status.conditions", ("type", "status")
)

# Sidecars and the gateway enforce these (snapshot/translate_security.py, proxy/guard.py):
# CUSTOM actions (an external authorizer) and targetRef (waypoints) are not.
_SELECTOR = ("selector", "selector.matchLabels")
_PEER_AUTHENTICATION = _at("spec", (*_SELECTOR, "mtls", "mtls.mode", "portLevelMtls")) | _at(
    "spec.portLevelMtls", ("mode",)
)
_SOURCE_FIELDS = (
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
    "namespaces",
    "notNamespaces",
    "ipBlocks",
    "notIpBlocks",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
    "serviceAccounts",
    "notServiceAccounts",
)
_OPERATION_FIELDS = (
    "hosts",
    "notHosts",
    "ports",
    "notPorts",
    "methods",
    "notMethods",
    "paths",
    "notPaths",
)
_AUTHORIZATION_POLICY = (
    _at("spec", (*_SELECTOR, "action", "rules"))
    | _at("spec.rules", ("from", "to", "when"))
    | _at("spec.rules.from", ("source",))
    | _at("spec.rules.from.source", _SOURCE_FIELDS)
    | _at("spec.rules.to", ("operation",))
    | _at("spec.rules.to.operation", _OPERATION_FIELDS)
    | _at("spec.rules.when", ("key", "values", "notValues"))
)
_REQUEST_AUTHENTICATION = (
    _at("spec", (*_SELECTOR, "jwtRules"))
    | _at(
        "spec.jwtRules",
        (
            "issuer",
            "audiences",
            "jwksUri",
            "jwks",
            "fromHeaders",
            "fromParams",
            "fromCookies",
            "outputPayloadToHeader",
            "outputClaimToHeaders",
            "forwardOriginalToken",
            "timeout",
        ),
    )
    | _at("spec.jwtRules.fromHeaders", ("name", "prefix"))
    | _at("spec.jwtRules.outputClaimToHeaders", ("header", "claim"))
)

_TELEMETRY = (
    _at("spec", ("selector", "selector.matchLabels", "tracing", "accessLogging"))
    | _at("spec.tracing", ("providers", "providers.name", "randomSamplingPercentage"))
    | _at("spec.tracing", ("disableSpanReporting",))
    | _at("spec.accessLogging", ("providers", "providers.name", "disabled"))
)
_TELEMETRY_PROVIDER = _at(
    "spec",
    ("zipkin", "zipkin.url", "opentelemetry", "opentelemetry.url", "batchSize", "flushInterval"),
) | _at("spec", ("timeout", "maxBufferedSpans"))
# runtime/autoscaler.py scales Deployments on these; Object and External metrics are not read.
_METRIC_TARGET = ("type", "averageValue", "averageUtilization")
_HPA = (
    _at("spec", ("scaleTargetRef", "minReplicas", "maxReplicas", "metrics", "behavior"))
    | _at("spec", ("targetCPUUtilizationPercentage",))
    | _at("spec.scaleTargetRef", ("apiVersion", "kind", "name"))
    | _at("spec.metrics", ("type", "resource", "containerResource", "pods"))
    | _at("spec.metrics.resource", ("name", "target"))
    | _at("spec.metrics.resource.target", _METRIC_TARGET)
    | _at("spec.metrics.containerResource", ("name", "container", "target"))
    | _at("spec.metrics.containerResource.target", _METRIC_TARGET)
    | _at("spec.metrics.pods", ("metric", "metric.name", "target"))
    | _at("spec.metrics.pods.target", _METRIC_TARGET)
    | _at("spec.behavior", ("scaleUp", "scaleDown"))
    | _each(
        ("spec.behavior.scaleUp", "spec.behavior.scaleDown"),
        ("stabilizationWindowSeconds", "selectPolicy", "policies"),
    )
    | _each(
        ("spec.behavior.scaleUp.policies", "spec.behavior.scaleDown.policies"),
        ("type", "value", "periodSeconds"),
    )
)
_API_PRODUCT = (
    _at("spec", ("hosts", "gateways", "routes", "apiKey", "plans", "consumers"))
    | _at("spec.routes", ("name", "uri", "uri.exact", "uri.prefix", "uri.regex", "methods"))
    | _at("spec.apiKey", ("header", "queryParam"))
    | _at("spec.plans", ("name", "routes", "rateLimit", "quota", "failureMode", "maxRequestBytes"))
    | _at("spec.plans.rateLimit", ("requests", "per", "burst"))
    | _at("spec.plans.quota", ("requests", "period"))
    | _at("spec.consumers", ("name", "plan", "keys", "keys.sha256", "keys.fromFile"))
    | _at("spec", ("openapi",))
    | _at("spec.openapi", ("specs", "path", "title", "validateRequests"))
    | _at("spec.openapi.specs", ("configMapKeyRef",))
    | _at("spec.openapi.specs.configMapKeyRef", ("name", "key"))
    | _at("spec", ("headers",))
    | _at("spec.headers", ("request", "response"))
    | _each(("spec.headers.request", "spec.headers.response"), ("set", "add", "remove"))
)

# Gateway API (snapshot/translate_gateway_api.py, docs/gateway-api.md): the ingress gateway serves
# the HTTP and HTTPS listeners of Gateways of its classes; HTTPRoutes route there and, with a
# Service parent, in the sidecars. Not acted on: addresses, infrastructure, ListenerSets, TLS
# options and client validation, session persistence, external authorization, extension filters,
# a redirect's ReplacePrefixMatch, and backend filters other than header modifiers.
_OBJECT_REF = ("group", "kind", "name", "namespace")
_BACKEND_REF = (*_OBJECT_REF, "port")
_HEADER_FILTER = ("set", "set.name", "set.value", "add", "add.name", "add.value", "remove")
_HEADER_MODIFIERS = ("requestHeaderModifier", "responseHeaderModifier")
_SELECTOR_FIELDS = (
    "matchLabels",
    "matchExpressions",
    "matchExpressions.key",
    "matchExpressions.operator",
    "matchExpressions.values",
)
_GATEWAY_CLASS = _at("spec", ("controllerName",))
_API_GATEWAY = (
    _at("spec", ("gatewayClassName", "listeners"))
    | _at("spec.listeners", ("name", "hostname", "port", "protocol", "tls", "allowedRoutes"))
    | _at("spec.listeners.tls", ("mode", "certificateRefs"))
    | _at("spec.listeners.tls.certificateRefs", _OBJECT_REF)
    | _at("spec.listeners.allowedRoutes", ("namespaces", "kinds", "kinds.group", "kinds.kind"))
    | _at("spec.listeners.allowedRoutes.namespaces", ("from", "selector"))
    | _at("spec.listeners.allowedRoutes.namespaces.selector", _SELECTOR_FIELDS)
)
_ROUTE_FILTERS = "spec.rules.filters"
_HTTP_ROUTE = (
    _at("spec", ("parentRefs", "hostnames", "rules"))
    | _at("spec.parentRefs", (*_OBJECT_REF, "sectionName", "port"))
    | _at("spec.rules", ("name", "matches", "filters", "backendRefs", "timeouts", "retry"))
    | _at("spec.rules.matches", ("path", "path.type", "path.value", "method"))
    | _each(
        ("spec.rules.matches.headers", "spec.rules.matches.queryParams"), ("type", "name", "value")
    )
    | _at(_ROUTE_FILTERS, ("type", *_HEADER_MODIFIERS))
    | _each((f"{_ROUTE_FILTERS}.{name}" for name in _HEADER_MODIFIERS), _HEADER_FILTER)
    | _at(f"{_ROUTE_FILTERS}.requestMirror", ("backendRef", "percent", "fraction"))
    | _at(f"{_ROUTE_FILTERS}.requestMirror.backendRef", _BACKEND_REF)
    | _at(f"{_ROUTE_FILTERS}.requestMirror.fraction", ("numerator", "denominator"))
    | _at(f"{_ROUTE_FILTERS}.requestRedirect", ("scheme", "hostname", "path", "port", "statusCode"))
    | _at(f"{_ROUTE_FILTERS}.requestRedirect.path", ("type", "replaceFullPath"))
    | _at(f"{_ROUTE_FILTERS}.urlRewrite", ("hostname", "path"))
    | _at(f"{_ROUTE_FILTERS}.urlRewrite.path", ("type", "replaceFullPath", "replacePrefixMatch"))
    | _at(
        f"{_ROUTE_FILTERS}.cors",
        (
            "allowOrigins",
            "allowCredentials",
            "allowMethods",
            "allowHeaders",
            "exposeHeaders",
            "maxAge",
        ),
    )
    | _at("spec.rules.backendRefs", (*_BACKEND_REF, "weight", "filters"))
    | _at("spec.rules.backendRefs.filters", ("type", *_HEADER_MODIFIERS))
    | _each(
        (f"spec.rules.backendRefs.filters.{name}" for name in _HEADER_MODIFIERS), _HEADER_FILTER
    )
    | _at("spec.rules.timeouts", ("request", "backendRequest"))
    | _at("spec.rules.retry", ("codes", "attempts", "backoff"))
)
_REFERENCE_GRANT = (
    _at("spec", ("from", "to"))
    | _at("spec.from", ("group", "kind", "namespace"))
    | _at("spec.to", ("group", "kind", "name"))
)
# The name ENFORCED and KEPT know a kind by when another API group has a kind of the same name.
GATEWAY_API_GATEWAY = "Gateway.gateway.networking.k8s.io"
_QUALIFIED = {("gateway.networking.k8s.io", "Gateway"): GATEWAY_API_GATEWAY}

# Field paths (camelCase, no list indices) that some part of Gossamer acts on, by kind: `gossamer
# up`, the snapshots the proxies run, or the DNS. A field is listed with every field above it,
# since `--strict` names only the outermost field not listed; a list's pattern covers each of its
# items, though `up` runs only the first container. A capability that starts acting on a field
# adds it here; docs/resources.md follows (`make docs`). A field not listed loads and is kept, and
# `gossamer validate --strict` reports it. Topic is not acted on here (the broker reads Topics
# itself).
ENFORCED: dict[str, frozenset[str]] = {
    "Service": _SERVICE,
    "Deployment": _DEPLOYMENT,
    "StatefulSet": _STATEFUL_SET,
    "Job": _JOB,
    "ConfigMap": _CONFIG_MAP,
    "Secret": _SECRET,
    "ServiceAccount": frozenset(),
    "Namespace": frozenset(),
    "Ingress": _INGRESS,
    "VirtualService": _VIRTUAL_SERVICE,
    "DestinationRule": _DESTINATION_RULE,
    "Gateway": _GATEWAY,
    "ServiceEntry": _SERVICE_ENTRY,
    "WorkloadEntry": _WORKLOAD_ENTRY,
    "PeerAuthentication": _PEER_AUTHENTICATION,
    "AuthorizationPolicy": _AUTHORIZATION_POLICY,
    "RequestAuthentication": _REQUEST_AUTHENTICATION,
    "Telemetry": _TELEMETRY,
    "TelemetryProvider": _TELEMETRY_PROVIDER,
    "ApiProduct": _API_PRODUCT,
    "HorizontalPodAutoscaler": _HPA,
    "GatewayClass": _GATEWAY_CLASS,
    GATEWAY_API_GATEWAY: _API_GATEWAY,
    "HTTPRoute": _HTTP_ROUTE,
    "ReferenceGrant": _REFERENCE_GRANT,
}

# Kinds that load and are stored and served, but that nothing acts on yet: `--strict` names the
# kind once instead of its fields.
KEPT = frozenset(
    {
        "DaemonSet",
        "ReplicaSet",
        "ControllerRevision",
        "CronJob",
        "Pod",
        "PodTemplate",
        "ReplicationController",
        "Endpoints",
        "Event",
        "LimitRange",
        "ResourceQuota",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "Node",
        "Binding",
        "ComponentStatus",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "IngressClass",
        "Role",
        "ClusterRole",
        "RoleBinding",
        "ClusterRoleBinding",
        "GRPCRoute",
        "TLSRoute",
        "TCPRoute",
    }
)
KIND_NOT_ENFORCED = "kind accepted and kept, not enforced yet"

# Fields that identify an object, describe it for people, or are written by a cluster: never
# reported, since there is nothing to act on.
_STRUCTURAL = frozenset({"apiVersion", "kind", "metadata", "spec", "status", "spec.description"})


def support_key(model: type[Resource]) -> str:
    """The name ENFORCED and KEPT know a kind by: its kind, qualified when two groups share it."""
    return _QUALIFIED.get((model.GROUP, model.KIND), model.KIND)


def is_enforced(kind: str, pattern: str) -> bool:
    """Whether Gossamer acts on the field at `pattern` (e.g. `spec.http.route`) of `kind`."""
    if kind in KEPT:
        return False
    return pattern in _STRUCTURAL or pattern in ENFORCED.get(kind, frozenset())


def not_enforced(loaded: LoadedResource) -> Iterator[Problem]:
    """A notice for each field this resource sets that Gossamer does not act on yet.

    Only the outermost such field is named: when `spec.http` is not enforced, nothing below it is
    listed again. A kind nothing acts on is named once, at its `kind`.
    """
    key = support_key(type(loaded.resource))
    if key in KEPT:
        yield loaded.problem(("kind",), KIND_NOT_ENFORCED, Severity.NOTICE, "not-enforced")
        return
    yield from _walk(loaded, key, loaded.resource, (), "")


def _walk(
    loaded: LoadedResource, key: str, model: BaseModel, path: FieldPath, pattern: str
) -> Iterator[Problem]:
    fields = type(model).model_fields
    for name in sorted(model.model_fields_set, key=list(fields).index):
        alias = fields[name].alias or name
        child_pattern = f"{pattern}.{alias}" if pattern else alias
        child_path = (*path, alias)
        if not is_enforced(key, child_pattern):
            yield loaded.problem(child_path, NOT_ENFORCED, Severity.NOTICE, "not-enforced")
            continue
        if child_pattern in ("metadata", "status"):
            continue
        yield from _descend(loaded, key, getattr(model, name), child_path, child_pattern)


def _descend(
    loaded: LoadedResource, key: str, value: Any, path: FieldPath, pattern: str
) -> Iterator[Problem]:
    if isinstance(value, BaseModel):
        yield from _walk(loaded, key, value, path, pattern)
    elif isinstance(value, list):
        for position, item in enumerate(value):
            if isinstance(item, BaseModel):
                yield from _walk(loaded, key, item, (*path, position), pattern)
    elif isinstance(value, dict):
        for entry, item in value.items():
            if isinstance(item, BaseModel):
                yield from _walk(loaded, key, item, (*path, str(entry)), pattern)
