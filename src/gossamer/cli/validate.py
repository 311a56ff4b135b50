"""`gossamer validate`: check manifests; each problem is `FILE:LINE: Kind name: field: message`."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from gossamer.resources.validation import Validation


class OutputFormat(StrEnum):
    """How `validate` prints its findings."""

    TEXT = "text"
    JSON = "json"


_STYLE = {"error": "red", "warning": "yellow", "notice": "cyan"}


def validate(
    files: Annotated[
        list[Path],
        typer.Option(
            "--filename",
            "-f",
            exists=True,
            help="A manifest file or a folder of them (searched recursively); may be repeated.",
        ),
    ],
    strict: Annotated[
        bool,
        typer.Option(
            help="Also report fields that load but are not acted on yet, and fail on warnings."
        ),
    ] = False,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="text, or json for programs.")
    ] = OutputFormat.TEXT,
    list_resources: Annotated[
        bool, typer.Option("--list", "-l", help="Also list every resource found and where.")
    ] = False,
) -> None:
    """Check manifests: exit 0 when valid, 1 when not, 2 on a usage error."""
    # Imported here so that commands which do not read manifests (the proxy) start lean.
    from gossamer.resources.validation import validate_paths

    result = validate_paths(files, strict=strict)
    if not result.loaded.files:
        where = ", ".join(str(f) for f in files)
        typer.echo(f"error: no manifest files (.yaml, .yml, .json) in {where}", err=True)
        raise typer.Exit(2)
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(_as_json(result), indent=2))
    else:
        print_validation(result, list_resources)
    raise typer.Exit(0 if result.ok else 1)


def print_validation(result: Validation, list_resources: bool) -> None:
    """Problems one per line (colored on a terminal), an optional listing, and a summary."""
    from gossamer.resources.problems import Severity

    console = Console(soft_wrap=True, highlight=False)
    if not console.is_terminal:
        # Piped output is read by programs and people's scripts: never truncate a column.
        console = Console(soft_wrap=True, highlight=False, width=10_000)
    for problem in result.problems:
        line = str(problem)
        if console.is_terminal:
            console.print(line, style=_STYLE[problem.severity.value], markup=False)
        else:
            sys.stdout.write(line + "\n")
    if list_resources:
        table = Table("kind", "namespace/name", "defined at", box=None, pad_edge=False)
        for loaded in result.loaded.resources:
            table.add_row(loaded.kind, f"{loaded.namespace}/{loaded.name}", loaded.where)
        console.print(table)
    errors, warnings = result.count(Severity.ERROR), result.count(Severity.WARNING)
    notices = result.count(Severity.NOTICE)
    counts = (
        f"{_plural(len(result.loaded.resources), 'resource')} in "
        f"{_plural(len(result.loaded.files), 'file')}"
    )
    found = [
        _plural(n, word)
        for n, word in ((errors, "error"), (warnings, "warning"), (notices, "field not enforced"))
        if n
    ]
    summary = f"{counts}: {', '.join(found)}" if found else f"{counts}: valid"
    if result.ok:
        console.print(f"[green]✓[/green] {summary}" if console.is_terminal else f"ok: {summary}")
    else:
        console.print(f"[red]✗[/red] {summary}" if console.is_terminal else f"invalid: {summary}")


def _plural(count: int, word: str) -> str:
    if count == 1:
        return f"1 {word}"
    plural = word.replace("field ", "fields ") if word.startswith("field ") else f"{word}s"
    return f"{count} {plural}"


def _as_json(result: Validation) -> dict[str, object]:
    return {
        "valid": result.ok,
        "strict": result.strict,
        "files": [str(f) for f in result.loaded.files],
        "resources": [
            {
                "apiVersion": loaded.resource.api_version,
                "kind": loaded.kind,
                "namespace": loaded.namespace,
                "name": loaded.name,
                "file": loaded.document.file,
                "line": loaded.document.line,
            }
            for loaded in result.loaded.resources
        ],
        "problems": [problem.as_dict() for problem in result.problems],
    }
