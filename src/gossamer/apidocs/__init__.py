"""The API documentation page an ingress gateway serves for an ApiProduct (`page.html`): static
HTML with the product's combined OpenAPI document inside it, rendered in the browser by a few
lines of script. No build step, nothing fetched from elsewhere."""

from __future__ import annotations

from importlib.resources import files


def template() -> str:
    """The page, with `/*SPEC*/null` where the document goes."""
    return files(__package__).joinpath("page.html").read_text(encoding="utf-8")
