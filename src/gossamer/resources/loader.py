"""Turn manifest files into typed resources, and every mistake in them into a one-line problem."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from gossamer.resources.base import Resource
from gossamer.resources.keyfiles import read_key_files
from gossamer.resources.problems import Problem, Severity, format_path
from gossamer.resources.registry import UnknownKindError, lookup
from gossamer.resources.schema import fields_of, model_at
from gossamer.resources.yamlsource import FieldPath, SourceDocument, YamlSyntaxError, read_documents

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class LoadedResource:
    """A typed resource and the document it was read from."""

    resource: Resource
    document: SourceDocument

    @property
    def kind(self) -> str:
        """The resource's kind."""
        return self.resource.KIND

    @property
    def name(self) -> str:
        """The resource's name."""
        return self.resource.name

    @property
    def namespace(self) -> str:
        """The resource's namespace (default when unset)."""
        return self.resource.namespace

    @property
    def where(self) -> str:
        """`FILE:LINE` of the document, for messages that point at another resource."""
        return f"{self.document.file}:{self.document.line}"

    def problem(
        self,
        path: FieldPath,
        message: str,
        severity: Severity = Severity.ERROR,
        code: str = "invalid",
    ) -> Problem:
        """A problem at `path` of this resource, on the line that path was written."""
        return Problem(
            self.document.file,
            self.document.line_of(path),
            message,
            severity,
            self.kind,
            self.name,
            format_path(path),
            code,
        )


@dataclass(slots=True)
class LoadResult:
    """What a set of files holds: the resources that loaded and the problems found."""

    resources: list[LoadedResource] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def extend(self, other: LoadResult) -> None:
        """Add another result's resources, problems and files to this one."""
        self.resources.extend(other.resources)
        self.problems.extend(other.problems)
        self.files.extend(other.files)


def manifest_files(path: Path) -> list[Path]:
    """A file as given, or every manifest under a folder (hidden folders skipped), in order."""
    if path.is_file():
        return [path]
    found = [
        candidate
        for candidate in path.rglob("*")
        if candidate.suffix in MANIFEST_SUFFIXES
        and candidate.is_file()
        and not any(part.startswith(".") for part in candidate.relative_to(path).parts)
    ]
    return sorted(found)


def load_paths(paths: Iterable[Path]) -> LoadResult:
    """Load every manifest in the given files and folders."""
    result = LoadResult()
    for path in paths:
        for file in manifest_files(path):
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                result.files.append(file)
                result.problems.append(Problem(str(file), 1, f"cannot read file: {error}"))
                continue
            result.extend(_with_key_files(load_text(text, str(file))))
            result.files.append(file)
    return result


def _with_key_files(result: LoadResult) -> LoadResult:
    """Keys given by file read next to their manifest (keyfiles.py)."""
    resources = []
    for loaded in result.resources:
        resolved, problems = read_key_files(loaded)
        resources.append(resolved)
        result.problems.extend(problems)
    result.resources = resources
    return result


def load_text(text: str, file: str) -> LoadResult:
    """Load the manifests in one file's text; `file` names it in problems."""
    result = LoadResult()
    try:
        documents = list(read_documents(text, file))
    except YamlSyntaxError as error:
        result.problems.append(Problem(error.file, error.line, error.message, code="yaml-syntax"))
        return result
    for document in documents:
        for item in _expand_lists(document):
            loaded, problems = load_document(item)
            result.problems.extend(problems)
            if loaded is not None:
                result.resources.append(loaded)
    return result


def _expand_lists(document: SourceDocument) -> Iterator[SourceDocument]:
    # `kubectl get -o yaml` writes a `kind: List` whose items are the objects.
    data = document.data
    if not (isinstance(data, dict) and data.get("kind") == "List" and "items" in data):
        yield document
        return
    items = data["items"] if isinstance(data["items"], list) else []
    for index, item in enumerate(items):
        prefix = ("items", index)
        lines = {path[2:]: line for path, line in document.lines.items() if path[:2] == prefix}
        duplicates = tuple(d for d in document.duplicates if d.path[:2] == prefix)
        yield SourceDocument(
            document.file,
            document.index,
            document.line_of(prefix),
            item,
            lines,
            tuple(type(d)(d.path[2:], d.line, d.first_line) for d in duplicates),
        )


def load_document(document: SourceDocument) -> tuple[LoadedResource | None, list[Problem]]:
    """Type one document; return the resource if it is valid, and every problem found."""
    data = document.data
    file, line = document.file, document.line
    if not isinstance(data, dict):
        message = "a manifest must be a mapping with apiVersion, kind and metadata"
        return None, [Problem(file, line, message, code="not-a-mapping")]
    kind = data.get("kind")
    metadata = data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    label_kind = kind if isinstance(kind, str) else None
    label_name = name if isinstance(name, str) else None

    def problem(path: FieldPath, message: str, code: str, at: int | None = None) -> Problem:
        return Problem(
            file,
            at or document.line_of(path),
            message,
            Severity.ERROR,
            label_kind,
            label_name,
            format_path(path),
            code,
        )

    problems = [
        problem(
            dup.path,
            f"given twice; line {dup.first_line} already sets it",
            "duplicate-field",
            dup.line,
        )
        for dup in document.duplicates
    ]
    for required in ("apiVersion", "kind"):
        if not isinstance(data.get(required), str):
            what = "is missing" if required not in data else "must be a string"
            problems.append(problem((required,), f"required field {what}", "missing"))
    if problems and not all(p.code == "duplicate-field" for p in problems):
        return None, problems
    try:
        model = lookup(data["apiVersion"], data["kind"])
    except UnknownKindError as error:
        problems.append(problem((error.field,), error.message, "unknown-kind"))
        return None, problems
    try:
        resource = model.model_validate(data)
    except ValidationError as error:
        problems.extend(
            problem(path, message, code)
            for path, message, code in _explain(model, data, error.errors(include_url=False))
        )
        return None, problems
    if not resource.metadata.name:
        problems.append(problem(("metadata", "name"), "required field is missing", "missing"))
        return None, problems
    loaded = LoadedResource(resource, document)
    problems.extend(
        loaded.problem(finding.path, finding.message, finding.severity)
        for finding in resource.check()
    )
    # A typed resource is kept even when its own rules fail, so that checks across resources
    # still see it; the errors are reported all the same.
    return loaded, problems


def _explain(
    model: type[Resource], data: Any, errors: Sequence[ErrorDetails]
) -> Iterator[tuple[FieldPath, str, str]]:
    """Pydantic's errors as (path, message, code), one per field; union branches are merged."""
    merged: dict[FieldPath, list[ErrorDetails]] = {}
    for error in errors:
        merged.setdefault(_data_path(data, error), []).append(error)
    for path, group in merged.items():
        yield path, _message(model, path, group), group[0]["type"]


def _data_path(data: Any, error: ErrorDetails) -> FieldPath:
    """The error's location as a path through the data, without pydantic's union branch names."""
    path: list[str | int] = []
    current = data
    location = error["loc"]
    for position, part in enumerate(location):
        if isinstance(current, dict) and part in current:
            current = current[part]
            path.append(part)
        elif isinstance(current, dict) and str(part) in {str(k) for k in current}:
            key = next(k for k in current if str(k) == str(part))
            current = current[key]
            path.append(str(part))
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
            path.append(part)
        elif error["type"] == "missing" and position == len(location) - 1:
            path.append(part)
    return tuple(path)


_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _message(model: type[Resource], path: FieldPath, group: list[ErrorDetails]) -> str:
    first = group[0]
    kind = first["type"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field" + _suggestion(model, path)
    wanted = [_TYPE_WORDS[e["type"]] for e in group if e["type"] in _TYPE_WORDS]
    if len(wanted) == len(group):
        unique = list(dict.fromkeys(wanted))
        return f"must be {' or '.join(unique)}, not {_describe(first['input'])}{_hint(first)}"
    specific = next((e for e in group if e["type"] not in _TYPE_WORDS), first)
    if specific["type"] == "literal_error":
        expected = (specific.get("ctx") or {}).get("expected", "")
        return f"must be one of {expected}, not {specific['input']!r}"
    if specific["type"] in ("range", "format"):
        return f"{specific['msg']}, not {specific['input']!r}"
    if specific["type"] == "value_error":
        return str((specific.get("ctx") or {}).get("error", specific["msg"]))
    return str(specific["msg"][0].lower() + specific["msg"][1:])


def _hint(error: ErrorDetails) -> str:
    value = error["input"]
    if error["type"] == "string_type" and isinstance(value, int | float | bool):
        return f' (quote it: "{str(value).lower() if isinstance(value, bool) else value}")'
    return ""


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _suggestion(model: type[Resource], path: FieldPath) -> str:
    parent = model_at(model, path[:-1])
    if parent is None:
        return ""
    known = list(fields_of(parent))
    close = difflib.get_close_matches(str(path[-1]), known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]}?)"
    return f" (known fields: {', '.join(known)})" if len(known) <= 12 else ""
