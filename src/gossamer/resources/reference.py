"""Write the field reference of every kind as Markdown, from the models themselves.

`make docs` runs this to refresh docs/resources.md between its markers; a test checks that the
committed page matches the code.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from gossamer.resources.base import Resource
from gossamer.resources.registry import KINDS, MODELS, api_version
from gossamer.resources.schema import fields_of
from gossamer.resources.support import is_enforced, support_key

BEGIN = "<!-- BEGIN GENERATED REFERENCE: make docs -->"
END = "<!-- END GENERATED REFERENCE -->"


def render() -> str:
    """The reference section: one table per kind, every field, whether Gossamer acts on it."""
    parts: list[str] = []
    for model in MODELS:
        versions = sorted(api_version(g, v) for (g, v, k), m in KINDS.items() if m is model)
        title = f"{model.KIND} ({', '.join(versions)})"
        parts.append(f"### {title}\n\n{_doc(model)}\n")
        parts.append("| field | type | Gossamer |\n| --- | --- | --- |")
        parts.extend(_rows(model, model, "", {}))
        parts.append("")
    return "\n".join(parts)


def _doc(model: type[BaseModel]) -> str:
    return (model.__doc__ or "").strip().splitlines()[0]


def _rows(
    kind: type[Resource],
    model: type[BaseModel],
    prefix: str,
    seen: dict[type[BaseModel], str],
) -> Iterator[str]:
    seen[model] = prefix
    # `status` is written by a cluster and never acted on: list it last, after what users write.
    for alias, shape in sorted(fields_of(model).items(), key=lambda item: item[0] == "status"):
        path = f"{prefix}.{alias}" if prefix else alias
        if path in ("apiVersion", "kind"):
            continue
        if shape.model is None and shape.description.endswith("any"):
            status = "kept as given, not checked inside"
        elif is_enforced(support_key(kind), path):
            status = "acts on it"
        else:
            status = "accepted, not enforced yet"
        required = " (required)" if shape.required else ""
        if shape.model is not None and shape.model in seen:
            again = f"; fields as `{seen[shape.model]}`"
            yield f"| `{path}` | {_escape(shape.description)}{required}{again} | {status} |"
            continue
        yield f"| `{path}` | {_escape(shape.description)}{required} | {status} |"
        if shape.model is not None and path not in ("metadata",):
            yield from _rows(kind, shape.model, path, seen)


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def rewrite(page: Path) -> bool:
    """Replace the generated part of `page`; return whether it changed."""
    text = page.read_text(encoding="utf-8")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    updated = f"{head}{BEGIN}\n\n{render()}\n{END}{tail}"
    if updated != text:
        page.write_text(updated, encoding="utf-8")
        return True
    return False


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/resources.md")
    print(f"{target}: {'updated' if rewrite(target) else 'up to date'}")
