"""Routing compiled once per snapshot: virtual host by authority, then the first matching route."""

from __future__ import annotations

import random
import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate

from gossamer.proxy.cors import CompiledCors
from gossamer.snapshot import (
    Cors,
    HeaderOps,
    Route,
    RouteMatch,
    RouteTable,
    StringMatch,
    VirtualHost,
)

StringTest = Callable[[str], bool]
HOSTS_REMEMBERED = 1024
"""Distinct Host headers a route table remembers the virtual host of (clients choose them)."""
PATHS_REMEMBERED = 1024
"""Per virtual host: the paths whose route is remembered (health checks, fixed API paths); a
path past the first 1,024 is matched by the regex each time."""
Headers = dict[str, str]


def compile_string_match(match: StringMatch) -> StringTest:
    """A predicate for one StringMatch, built once; regexes must match the whole string."""
    value = match.value.lower() if match.ignore_case else match.value
    if match.kind == "regex":
        pattern = re.compile(match.value, re.IGNORECASE if match.ignore_case else 0)
        return lambda text: pattern.fullmatch(text) is not None
    test: StringTest
    if match.kind == "exact":
        test = value.__eq__
    elif match.kind == "prefix":

        def test(text: str) -> bool:
            return text.startswith(value)

    else:
        test = _path_prefix(value)
    if match.ignore_case:
        return lambda text: test(text.lower())
    return test


def _path_prefix(prefix: str) -> StringTest:
    # Kubernetes' Prefix type matches by path element: /foo matches /foo and /foo/bar only.
    trimmed = prefix.rstrip("/")
    if not trimmed:
        return lambda _text: True
    with_slash = trimmed + "/"
    return lambda text: text == trimmed or text.startswith(with_slash)


class CompiledHeaderOps:
    """Header changes ready to apply to a list of (name, value) pairs."""

    __slots__ = ("add", "remove", "set")

    def __init__(self, ops: HeaderOps) -> None:
        self.set = tuple((k.lower().encode(), v.encode()) for k, v in ops.set)
        self.add = tuple((k.lower().encode(), v.encode()) for k, v in ops.add)
        names = {k for k, _ in self.set} | {k.lower().encode() for k in ops.remove}
        self.remove = frozenset(names)

    def apply(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """A new header list with removals (and replaced names) dropped, then set and add."""
        if self.remove:
            headers = [(k, v) for k, v in headers if k.lower() not in self.remove]
        headers.extend(self.set)
        headers.extend(self.add)
        return headers


def compile_header_ops(ops: HeaderOps | None) -> CompiledHeaderOps | None:
    """None when there is nothing to do, so the hot path skips it with one test."""
    if ops is None or not (ops.set or ops.add or ops.remove):
        return None
    return CompiledHeaderOps(ops)


def compile_cors(cors: Cors | None) -> CompiledCors | None:
    """A route's CORS policy with its origin matches compiled; None when it has none."""
    if cors is None:
        return None
    return CompiledCors(cors, tuple(compile_string_match(match) for match in cors.allow_origins))


class CompiledRoute:
    """A route with its matcher and its weighted cluster choice prepared."""

    __slots__ = (
        "cluster_names",
        "cors",
        "cumulative",
        "matcher",
        "mirrors",
        "needs_headers",
        "plain_request",
        "plain_response",
        "request_ops",
        "response_ops",
        "retries",
        "rewrite",
        "route",
        "target_request_ops",
        "target_response_ops",
        "timeout",
        "total",
    )

    def __init__(self, route: Route) -> None:
        self.route = route
        # Read per request: kept as attributes of this class, which compiled code reads directly
        # (a snapshot struct's fields go through Python's attribute lookup).
        self.timeout = route.timeout
        self.retries = route.retries
        self.mirrors = route.mirrors
        self.rewrite = route.rewrite
        self.matcher, self.needs_headers = _compile_match(route.match)
        self.cluster_names = tuple(c.cluster for c in route.clusters)
        self.cumulative = tuple(accumulate([c.weight for c in route.clusters]))
        self.total = self.cumulative[-1] if self.cumulative else 0
        self.request_ops = compile_header_ops(route.request_headers)
        self.response_ops = compile_header_ops(route.response_headers)
        self.target_request_ops = tuple(
            compile_header_ops(c.request_headers) for c in route.clusters
        )
        self.target_response_ops = tuple(
            compile_header_ops(c.response_headers) for c in route.clusters
        )
        rewrite = self.rewrite
        self.plain_request = (
            self.request_ops is None
            and not any(self.target_request_ops)
            and (rewrite is None or not rewrite.authority)
        )
        """No header changes on the way up: the head is written out in one pass."""
        self.cors = compile_cors(route.cors)
        self.plain_response = (
            self.response_ops is None and not any(self.target_response_ops) and self.cors is None
        )
        """No header changes on the way down."""

    def pick(self, chance: Callable[[], float] = random.random) -> int:
        """The index of the weighted cluster this request goes to."""
        if len(self.cumulative) == 1:
            return 0
        return bisect_right(self.cumulative, chance() * self.total)


class RequestFacts:
    """What routes match on, taken from a request once: path, method, authority, headers, query."""

    __slots__ = ("authority", "headers", "method", "path", "port", "query", "scheme")

    def __init__(
        self,
        path: str,
        method: str,
        authority: str,
        *,
        scheme: str = "http",
        port: int = 0,
        headers: Headers | None = None,
        query: Headers | None = None,
    ) -> None:
        self.path = path
        self.method = method
        self.authority = authority
        self.scheme = scheme
        self.port = port
        self.headers = headers
        self.query = query


Matcher = Callable[[RequestFacts], bool]


def _compile_match(match: RouteMatch) -> tuple[Matcher | None, bool]:
    tests: list[Matcher] = []
    for field_name, string_match in (
        ("path", match.path),
        ("method", match.method),
        ("authority", match.authority),
        ("scheme", match.scheme),
    ):
        if string_match is not None:
            tests.append(_field_test(field_name, compile_string_match(string_match)))
    if match.port is not None:
        wanted = match.port
        tests.append(lambda facts: facts.port == wanted)
    for header in match.headers:
        tests.append(_header_test(header.name.lower(), header.match, header.invert))
    for query in match.query:
        tests.append(_query_test(query.name, query.match))
    needs_headers = bool(match.headers or match.query)
    if not tests:
        return None, False
    if len(tests) == 1:
        return tests[0], needs_headers
    frozen = tuple(tests)
    return (lambda facts: all(test(facts) for test in frozen)), needs_headers


def _field_test(field_name: str, test: StringTest) -> Matcher:
    getter = getattr(RequestFacts, field_name).__get__
    return lambda facts: test(getter(facts))


def _header_test(name: str, match: StringMatch | None, invert: bool) -> Matcher:
    value_test = compile_string_match(match) if match is not None else None

    def test(facts: RequestFacts) -> bool:
        value = facts.headers.get(name) if facts.headers is not None else None
        found = value is not None and (value_test is None or value_test(value))
        return found != invert

    return test


def _query_test(name: str, match: StringMatch | None) -> Matcher:
    value_test = compile_string_match(match) if match is not None else None

    def test(facts: RequestFacts) -> bool:
        value = facts.query.get(name) if facts.query is not None else None
        return value is not None and (value_test is None or value_test(value))

    return test


class CompiledVirtualHost:
    """The routes of one virtual host, in order: the first that matches wins."""

    __slots__ = ("by_path", "name", "needs_headers", "paths", "routes")

    def __init__(self, host: VirtualHost) -> None:
        self.name = host.name
        self.routes = tuple(CompiledRoute(route) for route in host.routes)
        self.needs_headers = any(route.needs_headers for route in self.routes)
        self.by_path = _path_dispatch(host.routes)
        """When every route matches on the path alone: one regex whose first matching
        alternative (group n) is route n-1, so a request is routed by one C call."""
        self.paths: dict[str, CompiledRoute | None] = {}
        """Paths already routed by `by_path`, up to PATHS_REMEMBERED of them."""

    def find(self, facts: RequestFacts) -> CompiledRoute | None:
        """The first route whose match holds, or None."""
        for route in self.routes:
            matcher = route.matcher
            if matcher is None or matcher(facts):
                return route
        return None

    def find_path(self, path: str) -> CompiledRoute | None:
        """`find` for a host whose routes look at the path only (`by_path` is set)."""
        paths = self.paths
        if path in paths:
            return paths[path]
        assert self.by_path is not None
        found = self.by_path.match(path)
        route = None if found is None else self.routes[found.lastindex - 1]  # type: ignore[operator]
        if len(paths) < PATHS_REMEMBERED:
            paths[path] = route
        return route


def _path_dispatch(routes: Sequence[Route]) -> re.Pattern[str] | None:
    """The routes' path conditions as one alternation, or None if any route needs more.

    Only literal conditions take part (exact, prefix, Kubernetes path prefix, case-sensitive):
    they need no group of their own, so group n is route n-1. Regex routes keep the loop.
    """
    alternatives: list[str] = []
    for route in routes:
        match = route.match
        if match != RouteMatch(path=match.path):
            return None
        path = match.path
        if path is None:
            alternatives.append("()")
        elif path.ignore_case or path.kind == "regex":
            return None
        elif path.kind == "exact":
            alternatives.append(f"({re.escape(path.value)}\\Z)")
        elif path.kind == "prefix":
            alternatives.append(f"({re.escape(path.value)})")
        else:
            trimmed = path.value.rstrip("/")
            alternatives.append(f"({re.escape(trimmed)}(?=/|\\Z))" if trimmed else "()")
    if not alternatives:
        return None
    return re.compile("|".join(alternatives))


class CompiledRouteTable:
    """Virtual hosts by domain: exact names first, then the longest wildcard suffix, then `*`."""

    __slots__ = ("catch_all", "exact", "seen", "suffixes")

    def __init__(self, table: RouteTable) -> None:
        self.seen: dict[str, CompiledVirtualHost | None] = {}
        """Host headers already looked up, up to HOSTS_REMEMBERED of them."""
        self.exact: dict[str, CompiledVirtualHost] = {}
        suffixes: list[tuple[str, CompiledVirtualHost]] = []
        self.catch_all: CompiledVirtualHost | None = None
        for host in table.virtual_hosts:
            compiled = CompiledVirtualHost(host)
            for name in host.domains:
                domain = name.lower()
                if domain == "*":
                    self.catch_all = self.catch_all or compiled
                elif domain.startswith("*"):
                    suffixes.append((domain[1:], compiled))
                else:
                    self.exact.setdefault(domain, compiled)
        self.suffixes: Sequence[tuple[str, CompiledVirtualHost]] = sorted(
            suffixes, key=lambda item: -len(item[0])
        )

    def host(self, authority: str) -> CompiledVirtualHost | None:
        """The virtual host for a Host header (case-insensitive; with or without its port)."""
        try:
            return self.seen[authority]
        except KeyError:
            found = self._lookup(authority)
        if len(self.seen) < HOSTS_REMEMBERED:
            self.seen[authority] = found
        return found

    def _lookup(self, authority: str) -> CompiledVirtualHost | None:
        authority = authority.lower()
        found = self.exact.get(authority)
        if found is not None:
            return found
        bare = authority.rsplit(":", 1)[0] if ":" in authority else authority
        found = self.exact.get(bare)
        if found is not None:
            return found
        for suffix, host in self.suffixes:
            if bare.endswith(suffix):
                return host
        return self.catch_all
