"""Routing by path in one regex call picks the same route as trying each route in order."""

from __future__ import annotations

import pytest

from gossamer.proxy.router import PATHS_REMEMBERED, CompiledVirtualHost, RequestFacts
from gossamer.snapshot import HeaderMatch, Route, RouteMatch, StringMatch, VirtualHost
from gossamer.snapshot.model import MatchKind

PATHS = [
    "/", "/api", "/api/", "/api/v1", "/api/v1/", "/api/v1/x", "/api/v10/x", "/apix", "/API/v1/",
    "/static/app.js", "/static", "/staticfiles", "/exact", "/exact/", "/exactly", "/a.b", "/axb",
    "/(x)", "/[y]", "",
]  # fmt: skip


def route(name: str, kind: MatchKind | None = None, value: str = "") -> Route:
    path = StringMatch(kind=kind, value=value) if kind is not None else None
    return Route(name=name, match=RouteMatch(path=path))


TABLES = [
    [route("v1", "prefix", "/api/v1/"), route("api", "prefix", "/api"), route("all", "prefix", "/")],
    [route("exact", "exact", "/exact"), route("k8s", "path_prefix", "/static")],
    [route("k8s-slash", "path_prefix", "/static/"), route("root", "path_prefix", "/")],
    [route("dots", "exact", "/a.b"), route("parens", "prefix", "/(x)"), route("br", "exact", "/[y]")],
    [route("first-wins", "prefix", "/api"), route("never", "exact", "/api/v1")],
    [route("anything"), route("never", "prefix", "/")],
    [route("only-exact", "exact", "/")],
]  # fmt: skip


@pytest.mark.parametrize("routes", TABLES, ids=lambda rs: ",".join(r.name for r in rs))
def test_the_one_regex_agrees_with_the_routes_in_order(routes: list[Route]) -> None:
    host = CompiledVirtualHost(VirtualHost(name="h", domains=("*",), routes=tuple(routes)))
    assert host.by_path is not None
    for _ in range(2):  # the second time from the paths remembered
        for path in PATHS:
            expected = host.find(RequestFacts(path, "GET", "h"))
            found = host.find_path(path)
            assert (found and found.route.name) == (expected and expected.route.name), path


@pytest.mark.parametrize(
    "match",
    [
        RouteMatch(path=StringMatch(kind="regex", value="/api/[0-9]+")),
        RouteMatch(path=StringMatch(kind="prefix", value="/API", ignore_case=True)),
        RouteMatch(path=StringMatch(kind="prefix", value="/"), method=StringMatch("exact", "GET")),
        RouteMatch(headers=(HeaderMatch(name="end-user"),)),
        RouteMatch(port=8080),
    ],
)
def test_routes_that_look_past_a_literal_path_keep_the_loop(match: RouteMatch) -> None:
    routes = (route("plain", "prefix", "/static"), Route(name="special", match=match))
    host = CompiledVirtualHost(VirtualHost(name="h", domains=("*",), routes=routes))
    assert host.by_path is None


def test_paths_remembered_are_bounded_and_the_rest_still_routed() -> None:
    routes = (route("users", "prefix", "/users/"), route("root", "prefix", "/"))
    host = CompiledVirtualHost(VirtualHost(name="h", domains=("*",), routes=routes))
    for number in range(PATHS_REMEMBERED + 500):
        found = host.find_path(f"/users/{number}")
        assert found is not None and found.route.name == "users"
    assert len(host.paths) == PATHS_REMEMBERED
    assert host.find_path("/other") is not None and host.find_path("/other").route.name == "root"
