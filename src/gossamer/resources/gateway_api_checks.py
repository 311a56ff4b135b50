"""What a cluster would write in Gateway API status, as `validate` problems at their fields.

A route whose parentRef is not Accepted, or whose backendRef does not resolve, is a warning
naming the condition and its reason (`Accepted False (NoMatchingParent)`); so is a Gateway the
mesh's gateway serves with a listener it cannot program. References outside the files are
warnings, as elsewhere in `validate`: the files may be part of a mesh.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from gossamer.resources.gateway_api_binding import Condition, GatewayApiIndex, route_conditions
from gossamer.resources.kinds.gateway_api import (
    GROUP,
    HTTP_PROTOCOLS,
    SERVED_CLASSES,
    Gateway,
)
from gossamer.resources.kinds.gateway_api_routes import HTTPRoute
from gossamer.resources.loader import LoadedResource
from gossamer.resources.problems import Problem, Severity

_CONSEQUENCE = {
    "Accepted": "the route is not attached there",
    "ResolvedRefs": "requests for this backend get 500 (503 when others of the rule resolve)",
}


def gateway_api_problems(resources: Sequence[LoadedResource]) -> Iterator[Problem]:
    """Each condition that is not True of each HTTPRoute and served Gateway."""
    index = GatewayApiIndex.of(loaded.resource for loaded in resources)
    for loaded in resources:
        resource = loaded.resource
        if isinstance(resource, HTTPRoute):
            for path, condition in route_conditions(index, resource):
                yield _problem(loaded, path, condition)
        elif isinstance(resource, Gateway):
            yield from _gateway(loaded, resource, index)


def describe(condition: Condition) -> str:
    """`Accepted False (NoMatchingParent): no Gateway default/web; ...`."""
    state = "True" if condition.status else "False"
    text = f"{condition.type} {state} ({condition.reason})"
    if condition.message:
        text = f"{text}: {condition.message}"
    consequence = _CONSEQUENCE.get(condition.type)
    return f"{text}; {consequence}" if consequence and not condition.status else text


def _problem(loaded: LoadedResource, path: tuple[str | int, ...], condition: Condition) -> Problem:
    message = describe(condition)
    if isinstance(loaded.resource, Gateway):
        message = message.partition("; the route")[0]
    elif "requestMirror" in path:
        message = f"{message.partition('; ')[0]}; nothing is mirrored to it"
    return loaded.problem(path, message, Severity.WARNING, "gateway-api-status")


def _gateway(loaded: LoadedResource, gateway: Gateway, index: GatewayApiIndex) -> Iterator[Problem]:
    name = gateway.spec.gateway_class_name
    if name not in index.classes and name not in SERVED_CLASSES:
        condition = Condition(
            "Accepted",
            False,
            "InvalidParameters",
            f"no GatewayClass {name} in the files; the mesh's gateway serves classes "
            f"{' and '.join(sorted(SERVED_CLASSES))} and those of its controllers",
        )
        yield _problem(loaded, ("spec", "gatewayClassName"), condition)
        return
    if not index.served(gateway):
        return
    for position, listener in enumerate(gateway.spec.listeners):
        path = ("spec", "listeners", position)
        if listener.protocol not in HTTP_PROTOCOLS:
            condition = Condition(
                "Programmed",
                False,
                "UnsupportedProtocol",
                f"protocol {listener.protocol} is not served; the mesh's gateway serves HTTP "
                "and HTTPS listeners",
            )
            yield _problem(loaded, (*path, "protocol"), condition)
        tls = listener.tls
        for c, ref in enumerate(tls.certificate_refs if tls is not None else []):
            namespace = ref.namespace or gateway.namespace
            if namespace != gateway.namespace and not index.granted(
                (GROUP, "Gateway", gateway.namespace), namespace, ("", "Secret", ref.name)
            ):
                condition = Condition(
                    "ResolvedRefs",
                    False,
                    "RefNotPermitted",
                    f"no ReferenceGrant in namespace {namespace} lets Gateways of "
                    f"{gateway.namespace} refer to Secret {ref.name}; the listener is not served",
                )
                yield _problem(loaded, (*path, "tls", "certificateRefs", c), condition)
