"""`gossamer analyze`: the checks across resources that `gossamer validate` runs, over what the
control plane holds. Every namespace is read, so that references across namespaces resolve;
problems are reported for the chosen namespace (or all, with -A)."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from gossamer.cli.session import (
    AllNamespaces,
    Namespace,
    Server,
    Token,
    namespace_or_default,
    open_session,
)

if TYPE_CHECKING:
    from gossamer.cli.served_objects import ServedObjects
    from gossamer.resources.problems import Problem


class AnalyzeOutput(StrEnum):
    """How `analyze` prints its findings."""

    TEXT = "text"
    JSON = "json"


_STYLE = {"error": "red", "warning": "yellow", "notice": "cyan"}


def analyze(
    namespace: Namespace = None,
    all_namespaces: AllNamespaces = False,
    output: Annotated[
        AnalyzeOutput, typer.Option("--output", "-o", help="text, or json for programs.")
    ] = AnalyzeOutput.TEXT,
    server: Server = None,
    token: Token = None,
) -> None:
    """Check what the control plane holds: exit 0 when there is no error, 1 when there is."""
    from gossamer.cli.served_objects import list_everything
    from gossamer.resources.analysis import analyze as analyze_resources
    from gossamer.resources.problems import Severity, sort_key

    with open_session(server, token) as session:
        found = list_everything(session.client, session.names)
    scope = None if all_namespaces else namespace_or_default(namespace)
    problems = sorted([*found.problems, *analyze_resources(found.resources)], key=sort_key)
    reported = [p for p in problems if scope is None or found.namespace_of.get(p.file) == scope]
    objects = {where for where, ns in found.namespace_of.items() if scope in (None, ns)}
    if output is AnalyzeOutput.JSON:
        typer.echo(json.dumps(_as_json(found, scope, objects, reported), indent=2))
    else:
        _print_text(reported, _summary_counts(found, scope, objects))
    errors = sum(1 for p in reported if p.severity is Severity.ERROR)
    raise typer.Exit(1 if errors else 0)


def _summary_counts(found: ServedObjects, scope: str | None, objects: set[str]) -> str:
    where = (
        f"namespace {scope}"
        if scope is not None
        else _plural(len({found.namespace_of[o] for o in objects}), "namespace")
    )
    return f"{_plural(len(objects), 'resource')} in {where}"


def _print_text(problems: list[Problem], counts: str) -> None:
    from rich.console import Console

    from gossamer.resources.problems import Severity

    console = Console(soft_wrap=True, highlight=False)
    for problem in problems:
        if console.is_terminal:
            console.print(str(problem), style=_STYLE[problem.severity.value], markup=False)
        else:
            sys.stdout.write(f"{problem}\n")
    errors = sum(1 for p in problems if p.severity is Severity.ERROR)
    warnings = sum(1 for p in problems if p.severity is Severity.WARNING)
    found = [_plural(n, word) for n, word in ((errors, "error"), (warnings, "warning")) if n]
    summary = f"{counts}: {', '.join(found)}" if found else f"{counts}: valid"
    if not console.is_terminal:
        sys.stdout.write(f"{'invalid' if errors else 'ok'}: {summary}\n")
    elif errors:
        console.print(f"[red]✗[/red] {summary}")
    else:
        console.print(f"[green]✓[/green] {summary}")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _as_json(
    found: ServedObjects, scope: str | None, objects: set[str], problems: list[Problem]
) -> dict[str, object]:
    from gossamer.resources.problems import Severity

    return {
        "valid": not any(p.severity is Severity.ERROR for p in problems),
        "namespace": scope,
        "resources": [
            {
                "apiVersion": loaded.resource.api_version,
                "kind": loaded.kind,
                "namespace": loaded.namespace,
                "name": loaded.name,
                "file": loaded.document.file,
            }
            for loaded in found.resources
            if loaded.document.file in objects
        ],
        "problems": [problem.as_dict() for problem in problems],
    }
