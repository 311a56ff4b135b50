"""Read YAML documents and remember the line that every key and list item came from."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

# The C loader is several times faster on large manifests; PyYAML may be built without it.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

FieldPath = tuple[str | int, ...]


class YamlSyntaxError(Exception):
    """A file that is not valid YAML, with the line where the parser gave up."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A mapping key given twice in one mapping; YAML keeps the last, which hides mistakes."""

    path: FieldPath
    line: int
    first_line: int


@dataclass(frozen=True, slots=True)
class SourceDocument:
    """One YAML document: its data, where it starts, and the line of each field inside it."""

    file: str
    index: int
    line: int
    data: Any
    lines: Mapping[FieldPath, int]
    duplicates: tuple[Duplicate, ...] = field(default=())

    def line_of(self, path: FieldPath) -> int:
        """The line of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return self.line


def read_documents(text: str, file: str) -> Iterator[SourceDocument]:
    """Yield each non-empty document of `text`; raise YamlSyntaxError on the first syntax error."""
    loader = _Loader(text)
    index = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: dict[FieldPath, int] = {}
            duplicates: list[Duplicate] = []
            try:
                _walk(node, (), lines, duplicates, _expansion_limit(text))
            except _TooManyValuesError:
                # Aliases of aliases ("billion laughs"): a few hundred bytes that expand to
                # millions of values would stall whoever reads them next.
                raise YamlSyntaxError(
                    file, node.start_mark.line + 1, "YAML aliases expand to too many values"
                ) from None
            data = loader.construct_document(node)
            if data is not None:
                start = node.start_mark.line + 1
                yield SourceDocument(file, index, start, data, lines, tuple(duplicates))
            index += 1
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        # At the end of the stream the parser points one past the last line; name the last one.
        line = max(1, min(line, len(text.splitlines())))
        problem = error.problem or error.context or "invalid YAML"
        raise YamlSyntaxError(file, line, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as error:
        raise YamlSyntaxError(file, 1, f"YAML error: {error}") from None
    finally:
        loader.dispose()


class _TooManyValuesError(Exception):
    """Raised inside the walk; reported as a YamlSyntaxError with the document's line."""


def _expansion_limit(text: str) -> int:
    """More fields than this cannot come from the text without aliases repeating aliases."""
    return 10_000 + 20 * len(text)


def _walk(
    node: yaml.Node,
    path: FieldPath,
    lines: dict[FieldPath, int],
    duplicates: list[Duplicate],
    limit: int,
) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if len(lines) > limit:
        raise _TooManyValuesError
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                _walk_merged(value_node, path, lines, duplicates, limit)
                continue
            key = str(key_node.value)
            key_line = key_node.start_mark.line + 1
            if key in seen:
                duplicates.append(Duplicate((*path, key), key_line, seen[key]))
                continue
            seen[key] = key_line
            lines[(*path, key)] = key_line
            _walk(value_node, (*path, key), lines, duplicates, limit)
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            _walk(item, (*path, position), lines, duplicates, limit)


def _walk_merged(
    node: yaml.Node,
    path: FieldPath,
    lines: dict[FieldPath, int],
    duplicates: list[Duplicate],
    limit: int,
) -> None:
    # `<<: *anchor` copies keys from elsewhere: they take the anchor's lines unless given here too.
    sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
    for source in sources:
        if isinstance(source, yaml.MappingNode):
            for key_node, value_node in source.value:
                key_path = (*path, str(key_node.value))
                if key_path not in lines:
                    lines[key_path] = key_node.start_mark.line + 1
                    _walk(value_node, key_path, lines, duplicates, limit)
