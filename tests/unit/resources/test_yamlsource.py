"""YAML documents keep the line of every field; syntax errors and duplicate keys are caught."""

import time

import pytest

from gossamer.resources.yamlsource import YamlSyntaxError, read_documents

TEXT = """\
# a comment
apiVersion: v1
kind: Service
metadata:
  name: a
spec:
  ports:
  - port: 80
    name: http
  - port: 81
    name: admin
---
---
apiVersion: v1
kind: Service
metadata: {name: b}
"""


def test_every_key_and_item_has_its_line() -> None:
    first, second = read_documents(TEXT, "f.yaml")
    assert first.line == 2
    assert first.lines[("kind",)] == 3
    assert first.lines[("spec", "ports", 0)] == 8
    assert first.lines[("spec", "ports", 1, "name")] == 11
    assert second.lines[("metadata", "name")] == 16


def test_empty_documents_are_skipped_but_counted() -> None:
    documents = list(read_documents(TEXT, "f.yaml"))
    assert [d.index for d in documents] == [0, 2]


def test_line_of_falls_back_to_the_nearest_ancestor() -> None:
    first = next(read_documents(TEXT, "f.yaml"))
    assert first.line_of(("spec", "ports", 1, "targetPort")) == 10
    assert first.line_of(("nothing", "here")) == 2


def test_a_key_given_twice_is_reported_with_both_lines() -> None:
    (document,) = read_documents("a: 1\nb: 2\na: 3\n", "f.yaml")
    (duplicate,) = document.duplicates
    assert duplicate.path == ("a",)
    assert (duplicate.line, duplicate.first_line) == (3, 1)


def test_merge_keys_take_the_line_of_the_anchor() -> None:
    text = "base: &b\n  x: 1\nderived:\n  <<: *b\n  y: 2\n"
    (document,) = read_documents(text, "f.yaml")
    assert document.data["derived"] == {"x": 1, "y": 2}
    assert document.lines[("derived", "x")] == 2
    assert document.lines[("derived", "y")] == 5
    assert not document.duplicates


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: 1\nb: [1, 2\nc: 3\n", 3),
        ("a:\n  - x\n  y: 1\n", 3),
        ("a: 'unterminated\n", 1),
        ("key: value\n\tbad: tab\n", 2),
    ],
)
def test_syntax_errors_name_the_line(text: str, line: int) -> None:
    with pytest.raises(YamlSyntaxError) as caught:
        list(read_documents(text, "bad.yaml"))
    assert caught.value.line == line
    assert caught.value.file == "bad.yaml"
    assert "YAML syntax error" in caught.value.message


def test_aliases_of_aliases_are_refused_at_once_not_expanded() -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 8):
        levels.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    began = time.monotonic()
    with pytest.raises(YamlSyntaxError, match="aliases expand to too many values"):
        list(read_documents("\n".join(levels) + "\n", "bomb.yaml"))
    assert time.monotonic() - began < 1.0


def test_ordinary_anchors_still_work() -> None:
    [document] = read_documents("base: &b {a: 1}\ncopy: *b\n", "ok.yaml")
    assert document.data == {"base": {"a": 1}, "copy": {"a": 1}}
