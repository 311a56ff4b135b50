"""What a write must pass before it is stored: one object, the URL's identity, the resource model.

A body is read as YAML (JSON is YAML), checked against what the URL names, given its
server-owned metadata (uid, creationTimestamp, generation), and validated with the same loader
that `gossamer validate` runs; its errors come back as the same `Kind name: field: message` lines.
"""

from __future__ import annotations

import dataclasses
import math
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gossamer.control.api.catalog import ServedResource
from gossamer.control.api.status import ApiError, bad_request
from gossamer.control.store.model import ObjectKey, StoredObject
from gossamer.resources.loader import load_document
from gossamer.resources.problems import Problem, Severity, sort_key
from gossamer.resources.yamlsource import SourceDocument, YamlSyntaxError, read_documents

BODY_FILE = "body"
"""How problems name the request body (`body:LINE`)."""

NAMESPACE_PATTERN = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
"""A namespace is a DNS label (RFC 1123), at most 63 characters."""
NAME_PATTERN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
"""A name is a DNS subdomain (RFC 1123) of at most `NAME_MAX_LENGTH` characters."""
NAME_MAX_LENGTH = 253
_DNS_LABEL = re.compile(NAMESPACE_PATTERN)
_DNS_SUBDOMAIN = re.compile(NAME_PATTERN)
_SERVER_OWNED = ("uid", "creationTimestamp", "generation")
MAX_VERSION = 2**63 - 1
"""Versions are 64-bit signed integers in both stores (sqlite INTEGER, etcd's revision)."""


@dataclass(frozen=True, slots=True)
class Target:
    """What a request's URL names: a served resource, a namespace and maybe one name."""

    served: ServedResource
    namespace: str
    name: str | None = None

    def __post_init__(self) -> None:
        if not _DNS_LABEL.fullmatch(self.namespace):
            raise bad_request(f"invalid namespace {self.namespace!r}: must be a DNS label")
        if self.name is not None and not _is_name(self.name):
            raise bad_request(f"invalid name {self.name!r}: must be a DNS subdomain")

    def key(self, name: str | None = None) -> ObjectKey:
        """The store key of the named object (the URL's name unless given)."""
        chosen = name or self.name
        assert chosen is not None
        return ObjectKey(self.served.type, self.namespace, chosen)


@dataclass(frozen=True, slots=True)
class Admitted:
    """A write that passed: the body to store, the version it must replace, warnings to show."""

    body: dict[str, Any]
    precondition: int | None
    warnings: tuple[str, ...]

    @property
    def name(self) -> str:
        """metadata.name."""
        return str(self.body["metadata"]["name"])


@dataclass(frozen=True, slots=True)
class Admission:
    """Admits writes; the clock and uid source are injectable so tests can pin them."""

    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    new_uid: Callable[[], str] = lambda: str(uuid.uuid4())

    def create(self, target: Target, document: SourceDocument) -> Admitted:
        """A new object: identity from the URL, fresh server-owned metadata."""
        data = _identified(target, document)
        metadata = data["metadata"]
        precondition = _take_version(metadata)
        if precondition is not None:
            raise bad_request("metadata.resourceVersion must not be set on create")
        metadata["uid"] = self.new_uid()
        metadata["creationTimestamp"] = self.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        metadata["generation"] = 1
        return _validated(target, dataclasses.replace(document, data=data), None)

    def update(self, target: Target, document: SourceDocument, current: StoredObject) -> Admitted:
        """A new state of `current`: server-owned metadata carried over, generation bumped
        when anything but metadata and status changed."""
        data = _identified(target, document)
        metadata = data["metadata"]
        precondition = _take_version(metadata)
        previous = current.body.get("metadata", {})
        for field in _SERVER_OWNED:
            if field in previous:
                metadata[field] = previous[field]
        if _spec_of(data) != _spec_of(current.body):
            metadata["generation"] = int(previous.get("generation", 0)) + 1
        return _validated(target, dataclasses.replace(document, data=data), precondition)


def _is_name(text: str) -> bool:
    return len(text) <= NAME_MAX_LENGTH and _DNS_SUBDOMAIN.fullmatch(text) is not None


def read_body(raw: bytes, max_depth: int) -> SourceDocument:
    """The one document of a request body, or 400: JSON data, nested at most `max_depth` deep."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise bad_request(f"the body is not UTF-8: {error}") from None
    try:
        documents = list(read_documents(text, BODY_FILE))
    except YamlSyntaxError as error:
        message = f"the body is not valid JSON or YAML: line {error.line}: {error.message}"
        raise bad_request(message) from None
    except ValueError as error:
        # Parsed, but a scalar could not be built: a date like 2001-02-30, a 5000-digit integer.
        raise bad_request(f"the body is not valid JSON or YAML: {error}") from None
    except RecursionError:
        raise bad_request(f"the body is nested more than {max_depth} levels deep") from None
    if len(documents) != 1:
        raise bad_request(f"the body must hold exactly one object, not {len(documents)}")
    if not isinstance(documents[0].data, dict):
        raise bad_request("the body must be a JSON object with apiVersion, kind and metadata")
    require_json(documents[0].data, max_depth)
    return documents[0]


def require_json(data: object, max_depth: int) -> None:
    """400 unless `data` is what JSON can carry, at most `max_depth` containers deep.

    YAML also builds dates, bytes, sets, NaN and non-string keys, which can be validated but
    neither stored nor served; and deep nesting would exhaust the stack of whatever walks it
    next. Iterative, so that a self-referencing YAML alias ends at the depth bound.
    """
    pending: list[tuple[str, object, int]] = [("", data, 0)]
    while pending:
        path, value, depth = pending.pop()
        where = path or "the body"
        if isinstance(value, dict | list) and depth >= max_depth:
            field = re.split(r"[.\[]", path, maxsplit=1)[0] or "the body"
            raise bad_request(f"{field} is nested more than {max_depth} levels deep")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise bad_request(f"{where}: the key {key} is not a string; quote it")
                pending.append((f"{path}.{key}" if path else key, item, depth + 1))
        elif isinstance(value, list):
            pending.extend((f"{path}[{i}]", item, depth + 1) for i, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise bad_request(f"{where}: {value} is not a JSON number")
        elif value is not None and not isinstance(value, str | int | float):
            kind = type(value).__name__
            raise bad_request(f"{where}: a {kind} is not a JSON value; quote it to make it text")


def parse_version(text: str) -> int | None:
    """A version written as plain ASCII digits that fits the stores' 64 bits, else None.

    (`str.isdigit` also accepts '²', which `int` refuses, and `int` refuses 4300+ digits.)
    """
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_VERSION)):
        return None
    number = int(text)
    return number if number <= MAX_VERSION else None


def name_in(data: object) -> str | None:
    """metadata.name of a body, if it has one."""
    metadata = data.get("metadata") if isinstance(data, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else None


def document_of(data: Mapping[str, Any]) -> SourceDocument:
    """A document for data that has no source text (a patched object): every line is 1."""
    return SourceDocument(BODY_FILE, 0, 1, dict(data), {})


def _identified(target: Target, document: SourceDocument) -> dict[str, Any]:
    """A copy of the data whose apiVersion, kind, namespace and name agree with the URL."""
    served, data = target.served, document.data
    for field, expected in (("apiVersion", served.api_version), ("kind", served.kind)):
        given = data.get(field)
        if isinstance(given, str) and given != expected:
            raise bad_request(
                f"the {field} in the body ({given}) does not match the URL's ({expected})"
            )
    body = dict(data)
    metadata = body.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        # The model's own words say what metadata must be.
        _validated(target, document, None)
        raise AssertionError("the model accepted metadata that is not a mapping")
    metadata = body["metadata"] = dict(metadata)
    _agree(metadata, "namespace", target.namespace)
    if target.name is not None:
        _agree(metadata, "name", target.name)
    return body


def _agree(metadata: dict[str, Any], field: str, expected: str) -> None:
    given = metadata.setdefault(field, expected)
    if given != expected:
        raise bad_request(
            f"metadata.{field} in the body ({given}) does not match the URL's ({expected})"
        )


def _take_version(metadata: dict[str, Any]) -> int | None:
    """Remove metadata.resourceVersion and return it as an integer (None when absent)."""
    given = metadata.pop("resourceVersion", None)
    if given is None or given == "":
        return None
    version = parse_version(given) if isinstance(given, str) else None
    if not version:
        raise bad_request(f"metadata.resourceVersion must be a positive integer string: {given!r}")
    return version


def _spec_of(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("apiVersion", "metadata", "status")}


def _validated(target: Target, document: SourceDocument, precondition: int | None) -> Admitted:
    loaded, found = load_document(document)
    problems = sorted(found, key=sort_key)  # the order `gossamer validate` prints them in
    errors = [p for p in problems if p.severity is Severity.ERROR]
    warnings = tuple(_line(p) for p in problems if p.severity is not Severity.ERROR)
    if loaded is None or errors:
        name = name_in(document.data)
        raise _invalid(target.served, name, [_line(p) for p in errors], errors)
    return Admitted(document.data, precondition, warnings)


def _line(problem: Problem) -> str:
    """`Kind name: field.path: message`: what `gossamer validate` prints after `FILE:LINE: `."""
    return str(problem).removeprefix(f"{problem.file}:{problem.line}: ")


def _invalid(
    served: ServedResource, name: str | None, lines: list[str], problems: list[Problem]
) -> ApiError:
    causes = [
        {
            "reason": "FieldValueInvalid",
            "field": problem.path,
            "message": problem.message,
            "line": problem.line,
        }
        for problem in problems
    ]
    details = {"name": name or "", "group": served.group, "kind": served.kind, "causes": causes}
    return ApiError(422, "Invalid", "\n".join(lines), details)
