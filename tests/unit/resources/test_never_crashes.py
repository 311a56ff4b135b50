"""Whatever the input, loading gives problems, never an exception."""

import json
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from gossamer.resources import analyze, load_text
from gossamer.resources.registry import KINDS, api_version

KNOWN = [(api_version(group, version), kind) for (group, version, kind) in KINDS]
FIELDS = [
    "spec",
    "metadata",
    "name",
    "hosts",
    "http",
    "route",
    "destination",
    "host",
    "weight",
    "ports",
    "port",
    "targetPort",
    "selector",
    "subsets",
    "labels",
    "rules",
    "from",
    "to",
    "containers",
    "command",
    "template",
    "matchLabels",
    "servers",
    "tls",
    "mode",
    "mtls",
    "jwtRules",
    "issuer",
    "partitions",
    "plans",
    "consumers",
    "backend",
    "serviceName",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.floats(allow_nan=False),
    st.text(string.printable, max_size=12),
    st.sampled_from(["10s", "v1", "reviews", "*"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(FIELDS), inner, max_size=4),
    ),
    max_leaves=20,
)


@st.composite
def manifests(draw: st.DrawFn) -> dict[str, object]:
    version, kind = draw(st.sampled_from(KNOWN))
    document: dict[str, object] = {"apiVersion": version, "kind": kind}
    document["metadata"] = draw(st.one_of(st.just({"name": "a"}), values))
    document["spec"] = draw(values)
    return document


@settings(max_examples=300, deadline=None)
@given(manifests())
def test_structured_garbage_gives_problems_not_exceptions(document: dict[str, object]) -> None:
    result = load_text(json.dumps(document), "fuzz.json")
    analyze(result.resources)
    for problem in result.problems:
        assert problem.file == "fuzz.json"
        assert problem.line >= 1
        assert problem.message


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_problems_not_exceptions(text: str) -> None:
    result = load_text(text, "fuzz.yaml")
    analyze(result.resources)
    assert all(problem.line >= 1 for problem in result.problems)
