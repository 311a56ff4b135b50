"""`--strict` names the outermost field Gossamer does not act on, and only that one."""

import pytest

from gossamer.resources import load_text, support
from gossamer.resources.support import not_enforced

ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    mirror: {host: other}
    corsPolicy: {allowMethods: [GET]}
"""


def paths(monkeypatch: pytest.MonkeyPatch, enforced: set[str]) -> list[str]:
    monkeypatch.setattr(support, "ENFORCED", {"VirtualService": frozenset(enforced)})
    (loaded,) = load_text(ROUTE, "vs.yaml").resources
    return [f"{p.line}:{p.path}" for p in not_enforced(loaded)]


def test_with_nothing_enforced_each_top_level_field_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert paths(monkeypatch, set()) == ["5:spec.hosts", "6:spec.http"]


def test_an_enforced_field_is_entered_and_its_unenforced_children_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    enforced = {
        "spec.hosts",
        "spec.http",
        "spec.http.route",
        "spec.http.route.destination",
        "spec.http.route.destination.host",
    }
    assert paths(monkeypatch, enforced) == ["9:spec.http[0].mirror", "10:spec.http[0].corsPolicy"]


def test_fully_enforced_means_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    enforced = {
        "spec.hosts",
        "spec.http",
        "spec.http.route",
        "spec.http.route.destination",
        "spec.http.route.destination.host",
        "spec.http.mirror",
        "spec.http.mirror.host",
        "spec.http.corsPolicy",
        "spec.http.corsPolicy.allowMethods",
    }
    assert paths(monkeypatch, enforced) == []
