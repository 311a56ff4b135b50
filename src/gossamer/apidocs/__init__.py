"""The API documentation page an ingress gateway serves for an ApiProduct (`page.html`): static
HTML with the product's combined OpenAPI document inside it, rendered in the browser by a few
lines of script. No build step, nothing fetched from elsewhere."""

from __future__ import annotations

from importlib.resources import files


def template() -> str:
    """The page, with `/*SPEC*/null` where the document goes."""
    return files(__package__).joinpath("page.html").read_text(encoding="utf-8")


def page(document: str, html: str) -> bytes:
    """The documentation page: `html` (the template) with `document` (OpenAPI, as JSON text)
    inside it. Only this module is read by a gateway, which must not load YAML or the models."""
    # Inside <script>, "</" could end the element: JSON allows "<\/" for it.
    embedded = document.replace("</", "<\\/")
    return html.replace("/*SPEC*/null", embedded).encode()
