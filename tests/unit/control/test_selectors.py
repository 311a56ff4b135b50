"""Label selectors parse as Kubernetes writes them and match with its semantics."""

from __future__ import annotations

import pytest

from gossamer.control.store.selectors import LabelSelector, SelectorError

LABELS = {"app": "web", "tier": "front", "team": ""}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app=api", False),
        ("app!=api", True),
        ("missing!=x", True),
        ("app=web,tier=front", True),
        ("app=web,tier=back", False),
        ("app in (api, web)", True),
        ("app notin (web)", False),
        ("missing notin (web)", True),
        ("app", True),
        ("!app", False),
        ("!missing", True),
        ("team=", True),
        ("  app = web , tier in (front,back) ", True),
        ("app.kubernetes.io/name!=x", True),
    ],
)
def test_selectors_match_like_kubernetes(text: str, matches: bool) -> None:
    assert LabelSelector.parse(text).matches(LABELS) is matches


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("app=web,", "a label key is missing"),
        ("app in ()", "must not be empty"),
        ("app in web", "expected '('"),
        ("app in (web", "expected ',' or ')'"),
        ("app===web", "not a label value"),
        ("app=web tier=x", "expected ','"),
        ("=web", "not a label key"),
        ("app>1", "not a label key"),
        (f"app={'x' * 64}", "not a label value"),
    ],
)
def test_malformed_selectors_say_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(SelectorError) as error:
        LabelSelector.parse(text)
    assert words in str(error.value)
    assert repr(text) in str(error.value)


def test_a_selector_prints_back_in_canonical_form() -> None:
    selector = LabelSelector.parse("tier in (b,a),app=web,!old,team")
    assert str(selector) == "tier in (a,b),app=web,!old,team"
    assert LabelSelector.parse(str(selector)) == selector
    assert not LabelSelector.parse("") and selector
