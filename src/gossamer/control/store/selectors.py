"""Kubernetes label selectors (`app=web,tier!=db,env in (a,b),!old`): parsed once, then matched."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import NoReturn

# Label keys may carry a DNS prefix (`app.kubernetes.io/name`); values are at most 63 characters.
_KEY = r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_KEY_RE = re.compile(_KEY)
_VALUE_RE = re.compile(_VALUE)
_TOKEN = re.compile(r"\s*(!=|==|=|\(|\)|,|!|[^\s!=(),]+)")


class SelectorError(ValueError):
    """A label selector that does not parse; the message says where."""


class Operator(StrEnum):
    """How one requirement compares a label."""

    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"


@dataclass(frozen=True, slots=True)
class Requirement:
    """One comma-separated term of a selector."""

    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether `labels` satisfy this term (Kubernetes semantics: `!=` matches a missing key)."""
        value = labels.get(self.key)
        match self.operator:
            case Operator.EQUALS | Operator.IN:
                return value is not None and value in self.values
            case Operator.NOT_EQUALS | Operator.NOT_IN:
                return value is None or value not in self.values
            case Operator.EXISTS:
                return value is not None
            case Operator.DOES_NOT_EXIST:
                return value is None

    def __str__(self) -> str:
        values = sorted(self.values)
        match self.operator:
            case Operator.EQUALS | Operator.NOT_EQUALS:
                return f"{self.key}{self.operator.value}{values[0]}"
            case Operator.IN | Operator.NOT_IN:
                return f"{self.key} {self.operator.value} ({','.join(values)})"
            case Operator.EXISTS:
                return self.key
            case Operator.DOES_NOT_EXIST:
                return f"!{self.key}"


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """All requirements must hold; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        """Parse the `labelSelector` query parameter; raise SelectorError when malformed."""
        return cls(tuple(_Parser(text).requirements()))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an object with these labels is selected."""
        return all(requirement.matches(labels) for requirement in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def __str__(self) -> str:
        return ",".join(str(requirement) for requirement in self.requirements)


class _Parser:
    """A recursive-descent parser over the selector's tokens."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._tokens = _tokenize(text)
        self._at = 0

    def requirements(self) -> Iterator[Requirement]:
        if not self._text.strip():
            return
        while True:
            yield self._requirement()
            token = self._next()
            if token is None:
                return
            if token != ",":
                self._fail(f"expected ',' before {token!r}")

    def _requirement(self) -> Requirement:
        token = self._next()
        if token == "!":
            return Requirement(self._key(self._next()), Operator.DOES_NOT_EXIST)
        key = self._key(token)
        operator = self._peek()
        if operator is None or operator == ",":
            return Requirement(key, Operator.EXISTS)
        self._at += 1
        if operator in ("=", "==", "!="):
            kind = Operator.NOT_EQUALS if operator == "!=" else Operator.EQUALS
            return Requirement(key, kind, frozenset({self._optional_value()}))
        if operator in ("in", "notin"):
            return Requirement(key, Operator(operator), self._value_set())
        return self._fail(f"expected =, ==, !=, in or notin after {key!r}, not {operator!r}")

    def _value_set(self) -> frozenset[str]:
        if self._next() != "(":
            self._fail("expected '(' to open a set of values")
        values: set[str] = set()
        while True:
            token = self._next()
            if token == ")" and not values:
                self._fail("a set of values must not be empty")
            values.add(self._value(token))
            token = self._next()
            if token == ")":
                return frozenset(values)
            if token != ",":
                self._fail("expected ',' or ')' in a set of values")

    def _key(self, token: str | None) -> str:
        if token is None:
            self._fail("a label key is missing")
        if not _KEY_RE.fullmatch(token) or len(token.rpartition("/")[2]) > 63:
            self._fail(f"{token!r} is not a label key")
        return token

    def _value(self, token: str | None) -> str:
        if token is None:
            self._fail("a label value is missing")
        if token in ",()" or not _VALUE_RE.fullmatch(token) or len(token) > 63:
            self._fail(f"{token!r} is not a label value")
        return token

    def _optional_value(self) -> str:
        # `tier=` selects an empty value, as in Kubernetes.
        if self._peek() in (None, ","):
            return ""
        return self._value(self._next())

    def _peek(self) -> str | None:
        return self._tokens[self._at] if self._at < len(self._tokens) else None

    def _next(self) -> str | None:
        token = self._peek()
        self._at += 1
        return token

    def _fail(self, message: str) -> NoReturn:
        raise SelectorError(f"invalid label selector {self._text!r}: {message}")


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:  # only trailing blanks are left
            break
        tokens.append(match.group(1))
        position = match.end()
    return tokens
