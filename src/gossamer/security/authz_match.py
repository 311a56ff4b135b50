"""Compiled AuthorizationPolicy matchers: a rule's sources, operations and conditions as tests.

A rule becomes predicates over a request built from frozensets, prefix and suffix tuples and
parsed IP networks, so that a check only compares strings and walks short tuples. `Needs`
records which derived facts the predicates read, and `RequestView` derives only those, once
per request.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

from gossamer.snapshot.model import (
    AuthzAction,
    AuthzCondition,
    AuthzOperation,
    AuthzRule,
    AuthzSource,
)

if TYPE_CHECKING:
    from gossamer.security.authz import AuthzRequest

__all__ = ["Needs", "Predicate", "RequestView", "any_clause", "compile_rule"]

# An address as (IP version, value): inet_pton and an int cost far less than ipaddress objects.
IpAddress = tuple[int, int]
StringTest = Callable[[str], bool]
IpTest = Callable[[IpAddress | None], bool]

# JWT claims that Istio treats as space-delimited lists (OAuth scopes and permissions).
_SPACE_DELIMITED_CLAIMS = frozenset({"scope", "permission"})
_CLAIMS_KEY = "request.auth.claims"
_HEADER_KEY = "request.headers"
_KEY_ARGUMENT = re.compile(r"\[([^\[\]]+)\]")


class Needs:
    """Which derived facts the compiled policies read, so a check computes only those."""

    __slots__ = (
        "claims",
        "destination_ip",
        "headers",
        "host",
        "namespace",
        "remote_ip",
        "source_ip",
    )

    def __init__(self) -> None:
        self.host = False
        self.namespace = False
        self.source_ip = False
        self.remote_ip = False
        self.destination_ip = False
        self.headers = False
        self.claims = False


class RequestView:
    """One request and the facts derived from it once (parsed IPs, bare host, namespace)."""

    __slots__ = (
        "destination_ip",
        "host",
        "host_bare",
        "namespace",
        "remote_ip",
        "request",
        "source_ip",
    )

    def __init__(self, request: AuthzRequest, needs: Needs) -> None:
        self.request = request
        self.host = self.host_bare = ""
        if needs.host:
            self.host = request.host.lower()
            self.host_bare = _strip_port(self.host)
        self.namespace = _principal_namespace(request.source_principal) if needs.namespace else ""
        self.source_ip = _parse_ip(request.source_ip) if needs.source_ip else None
        self.remote_ip = None
        if needs.remote_ip:
            self.remote_ip = _parse_ip(request.remote_ip or request.source_ip)
        self.destination_ip = _parse_ip(request.destination_ip) if needs.destination_ip else None


Predicate = Callable[[RequestView], bool]


def compile_rule(rule: AuthzRule, action: AuthzAction, needs: Needs) -> tuple[Predicate, ...]:
    """A rule as predicates that must all hold: any source, any operation, every condition."""
    predicates: list[Predicate] = []
    if rule.sources:
        predicates.append(any_clause([_compile_source(s, needs) for s in rule.sources]))
    if rule.operations:
        predicates.append(any_clause([_compile_operation(o, needs) for o in rule.operations]))
    predicates.extend(_compile_condition(c, action, needs) for c in rule.conditions)
    return tuple(predicates)


def any_clause(clauses: Sequence[tuple[Predicate, ...]]) -> Predicate:
    """Whether any clause has all its predicates hold (an empty clause always holds)."""
    frozen = tuple(clauses)

    def holds(view: RequestView) -> bool:
        for clause in frozen:
            for predicate in clause:
                if not predicate(view):
                    break
            else:
                return True
        return False

    return holds


def _compile_source(source: AuthzSource, needs: Needs) -> tuple[Predicate, ...]:
    """A `from.source`: every non-empty field must match, every `not_` field must not."""
    predicates: list[Predicate] = []
    for values, negate in ((source.principals, False), (source.not_principals, True)):
        if values:
            predicates.append(_string_predicate(_source_principal, _strings(values), negate))
    pairs = ((source.request_principals, False), (source.not_request_principals, True))
    for values, negate in pairs:
        if values:
            predicates.append(_string_predicate(_request_principal, _strings(values), negate))
    for values, negate in ((source.namespaces, False), (source.not_namespaces, True)):
        if values:
            needs.namespace = True
            predicates.append(_string_predicate(_source_namespace, _strings(values), negate))
    for values, negate in ((source.ip_blocks, False), (source.not_ip_blocks, True)):
        if values:
            needs.source_ip = True
            predicates.append(_ip_predicate(_source_ip, _networks(values), negate))
    pairs = ((source.remote_ip_blocks, False), (source.not_remote_ip_blocks, True))
    for values, negate in pairs:
        if values:
            needs.remote_ip = True
            predicates.append(_ip_predicate(_remote_ip, _networks(values), negate))
    return tuple(predicates)


def _compile_operation(operation: AuthzOperation, needs: Needs) -> tuple[Predicate, ...]:
    """A `to.operation`: every non-empty field must match, every `not_` field must not."""
    predicates: list[Predicate] = []
    for values, negate in ((operation.hosts, False), (operation.not_hosts, True)):
        if values:
            needs.host = True
            predicates.append(_host_predicate(values, negate))
    for values, negate in ((operation.ports, False), (operation.not_ports, True)):
        if values:
            predicates.append(_port_predicate(_ports(values), negate))
    for values, negate in ((operation.methods, False), (operation.not_methods, True)):
        if values:
            predicates.append(_string_predicate(_method, _strings(values), negate))
    for values, negate in ((operation.paths, False), (operation.not_paths, True)):
        if values:
            predicates.append(_string_predicate(_path, _paths(values), negate))
    return tuple(predicates)


def _compile_condition(condition: AuthzCondition, action: AuthzAction, needs: Needs) -> Predicate:
    """A `when` condition: the attribute has one of `values` and none of `not_values`.

    A key this evaluator does not know fails closed, as Istio does with attributes it cannot
    read: in a DENY policy the condition holds (the rule denies more), elsewhere it never does.
    """
    key = condition.key
    if key.startswith(_HEADER_KEY):
        names = _key_arguments(key, _HEADER_KEY)
        if len(names) == 1:
            needs.headers = True
            return _header_condition(names[0].lower(), condition)
    elif key.startswith(_CLAIMS_KEY):
        names = _key_arguments(key, _CLAIMS_KEY)
        if names:
            needs.claims = True
            return _claim_condition(names, condition)
    elif key in _STRING_ATTRIBUTES:
        if key == "source.namespace":
            needs.namespace = True
        return _scalar_condition(_STRING_ATTRIBUTES[key], condition)
    elif key in _CLAIM_ATTRIBUTES:
        needs.claims = True
        return _claim_condition((_CLAIM_ATTRIBUTES[key],), condition)
    elif key == "source.ip":
        needs.source_ip = True
        return _ip_condition(_source_ip, condition)
    elif key == "remote.ip":
        needs.remote_ip = True
        return _ip_condition(_remote_ip, condition)
    elif key == "destination.ip":
        needs.destination_ip = True
        return _ip_condition(_destination_ip, condition)
    elif key == "destination.port":
        return _port_condition(condition)
    unknown_holds = action == "DENY"
    return lambda view: unknown_holds


def _key_arguments(key: str, attribute: str) -> tuple[str, ...]:
    """The names in `attribute[a][b]`; empty when the key is not exactly of that form."""
    rest = key[len(attribute) :]
    names = tuple(_KEY_ARGUMENT.findall(rest))
    if not names or "".join(f"[{name}]" for name in names) != rest:
        return ()
    return names


def _negatable(test: Callable[[RequestView], bool], negate: bool) -> Predicate:
    if negate:
        return lambda view: not test(view)
    return test


def _string_predicate(
    get: Callable[[RequestView], str], test: StringTest, negate: bool
) -> Predicate:
    return _negatable(lambda view: test(get(view)), negate)


def _ip_predicate(
    get: Callable[[RequestView], IpAddress | None], test: IpTest, negate: bool
) -> Predicate:
    return _negatable(lambda view: test(get(view)), negate)


def _port_predicate(ports: frozenset[int], negate: bool) -> Predicate:
    return _negatable(lambda view: view.request.port in ports, negate)


def _host_predicate(patterns: Sequence[str], negate: bool) -> Predicate:
    """Hosts, case-insensitive; a pattern without a port is compared with the bare host."""
    lowered = [pattern.lower() for pattern in patterns]
    bare = _strings([p for p in lowered if _strip_port(p) == p])
    with_port = _strings([p for p in lowered if _strip_port(p) != p])

    def host(view: RequestView) -> bool:
        return bare(view.host_bare) or with_port(view.host)

    return _negatable(host, negate)


def _header_condition(name: str, condition: AuthzCondition) -> Predicate:
    def header(view: RequestView) -> str | None:
        headers = view.request.headers
        return None if headers is None else headers.get(name)

    return _scalar_condition(header, condition)


def _scalar_condition(
    get: Callable[[RequestView], str | None], condition: AuthzCondition
) -> Predicate:
    """A condition on one string; an absent (None or "") value matches only `not_values`."""
    positive = _strings(condition.values) if condition.values else None
    negative = _strings(condition.not_values) if condition.not_values else None

    def scalar(view: RequestView) -> bool:
        value = get(view) or ""
        if positive is not None and not positive(value):
            return False
        return negative is None or not negative(value)

    return scalar


def _claim_condition(names: tuple[str, ...], condition: AuthzCondition) -> Predicate:
    """A condition on a (nested) claim; a list claim matches when any element does."""
    positive = _strings(condition.values) if condition.values else None
    negative = _strings(condition.not_values) if condition.not_values else None
    split = len(names) == 1 and names[0] in _SPACE_DELIMITED_CLAIMS

    def claim(view: RequestView) -> bool:
        values = _claim_values(view.request.claims, names, split)
        if positive is not None and not any(positive(v) for v in values):
            return False
        return negative is None or not any(negative(v) for v in values)

    return claim


def _claim_values(
    claims: Mapping[str, object] | None, names: tuple[str, ...], split: bool
) -> tuple[str, ...]:
    """The string values at `claims[a][b]...`: one string, the strings of a list, or none."""
    value: object = claims
    for name in names:
        if not isinstance(value, Mapping):
            return ()
        value = value.get(name)
    if isinstance(value, str):
        return tuple(value.split()) if split else (value,)
    if isinstance(value, list | tuple):
        return tuple(item for item in value if isinstance(item, str))
    return ()


def _ip_condition(
    get: Callable[[RequestView], IpAddress | None], condition: AuthzCondition
) -> Predicate:
    positive = _networks(condition.values) if condition.values else None
    negative = _networks(condition.not_values) if condition.not_values else None

    def ip(view: RequestView) -> bool:
        address = get(view)
        if positive is not None and not positive(address):
            return False
        return negative is None or not negative(address)

    return ip


def _port_condition(condition: AuthzCondition) -> Predicate:
    positive = _ports(condition.values) if condition.values else None
    negative = _ports(condition.not_values)

    def port(view: RequestView) -> bool:
        number = view.request.port
        return (positive is None or number in positive) and number not in negative

    return port


# Readers of one attribute of a request, shared by the compiled predicates.


def _method(view: RequestView) -> str:
    return view.request.method


def _path(view: RequestView) -> str:
    return view.request.path


def _source_principal(view: RequestView) -> str:
    return view.request.source_principal


def _source_namespace(view: RequestView) -> str:
    return view.namespace


def _service_account(view: RequestView) -> str:
    """`NAMESPACE/SA` of the peer, the form of Istio's `source.serviceAccount` attribute."""
    principal = view.request.source_principal
    start = principal.find("/ns/")
    if start < 0:
        return ""
    namespace, _, account = principal[start + 4 :].partition("/sa/")
    return f"{namespace}/{account}" if account else ""


def _request_principal(view: RequestView) -> str:
    return view.request.request_principal


def _sni(view: RequestView) -> str:
    return view.request.sni


def _source_ip(view: RequestView) -> IpAddress | None:
    return view.source_ip


def _remote_ip(view: RequestView) -> IpAddress | None:
    return view.remote_ip


def _destination_ip(view: RequestView) -> IpAddress | None:
    return view.destination_ip


# Condition keys whose attribute is one string of the request.
_STRING_ATTRIBUTES: Final[Mapping[str, Callable[[RequestView], str]]] = {
    "source.principal": _source_principal,
    "source.namespace": _source_namespace,
    "source.serviceAccount": _service_account,
    "request.auth.principal": _request_principal,
    "connection.sni": _sni,
}
# Condition keys read from the JWT's claims -> the claim.
_CLAIM_ATTRIBUTES: Final[Mapping[str, str]] = {
    "request.auth.audiences": "aud",
    "request.auth.presenter": "azp",
}


def _strings(patterns: Sequence[str]) -> StringTest:
    """Istio's string match: `*` (any non-empty), `*suffix`, `prefix*`, or exact."""
    exact: set[str] = set()
    prefixes: list[str] = []
    suffixes: list[str] = []
    presence = False
    for pattern in patterns:
        if pattern == "*":
            presence = True
        elif pattern.startswith("*"):
            suffixes.append(pattern[1:])
        elif pattern.endswith("*"):
            prefixes.append(pattern[:-1])
        else:
            exact.add(pattern)
    return _string_test(frozenset(exact), tuple(prefixes), tuple(suffixes), presence)


def _string_test(
    exact: frozenset[str], prefixes: tuple[str, ...], suffixes: tuple[str, ...], presence: bool
) -> StringTest:
    """The cheapest test for the pattern kinds present: exact-only lists are a set lookup."""
    if presence:
        return bool
    if not prefixes and not suffixes:
        return exact.__contains__

    def test(value: str) -> bool:
        return value in exact or value.startswith(prefixes) or value.endswith(suffixes)

    return test


def _paths(patterns: Sequence[str]) -> StringTest:
    """Paths: Istio's string match, plus URI templates with `{*}` (one segment) and `{**}`.

    `{**}` matches the rest of the path, any number of segments, and must come last, as in the
    Envoy URI template matcher Istio uses for such paths.
    """
    templates = [p for p in patterns if "{*}" in p or "{**}" in p]
    plain = _strings([p for p in patterns if p not in templates])
    if not templates:
        return plain
    compiled = re.compile("|".join(f"(?:{_template_regex(t)})" for t in templates))

    def path(value: str) -> bool:
        return plain(value) or compiled.fullmatch(value) is not None

    return path


def _template_regex(template: str) -> str:
    parts = re.split(r"(\{\*\*\}|\{\*\})", template)
    pieces = {"{*}": "[^/]+", "{**}": ".*"}
    return "".join(pieces.get(part, re.escape(part)) for part in parts)


def _networks(blocks: Sequence[str]) -> IpTest:
    """Single IPs and CIDRs; a block that does not parse matches no address."""
    networks: list[tuple[int, int, int]] = []
    for block in blocks:
        try:
            network = ipaddress.ip_network(block.strip(), strict=False)
        except ValueError:
            continue
        networks.append((network.version, int(network.network_address), int(network.netmask)))
    frozen = tuple(networks)

    def contains(address: IpAddress | None) -> bool:
        if address is None:
            return False
        version, value = address
        return any(v == version and value & mask == net for v, net, mask in frozen)

    return contains


def _ports(values: Sequence[str]) -> frozenset[int]:
    """Port numbers written as strings; one that is not a number matches no port."""
    return frozenset(int(v) for v in values if v.strip().isdigit())


_V4_MAPPED_PREFIX = 0xFFFF


def _parse_ip(text: str) -> IpAddress | None:
    """An address, with IPv4-mapped IPv6 (from dual-stack sockets) taken as the IPv4 one."""
    if not text:
        return None
    try:
        return (4, int.from_bytes(socket.inet_pton(socket.AF_INET, text)))
    except (OSError, ValueError):
        pass
    try:
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, text))
    except (OSError, ValueError):
        return None
    if value >> 32 == _V4_MAPPED_PREFIX:
        return (4, value & 0xFFFFFFFF)
    return (6, value)


def _strip_port(authority: str) -> str:
    """`host` of `host:port` and `[v6]:port`; an authority without a port is returned as is."""
    if authority.startswith("["):
        end = authority.find("]")
        return authority[: end + 1] if end >= 0 else authority
    host, colon, port = authority.partition(":")
    if colon and ":" not in port:
        return host
    return authority


def _principal_namespace(principal: str) -> str:
    """`NS` of `TRUST_DOMAIN/ns/NS/sa/SA`; empty when the principal has no namespace."""
    start = principal.find("/ns/")
    if start < 0:
        return ""
    end = principal.find("/", start + 4)
    return principal[start + 4 : end] if end >= 0 else principal[start + 4 :]
