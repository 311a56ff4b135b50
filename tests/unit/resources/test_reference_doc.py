"""docs/resources.md carries the field reference of the code as it is now."""

from pathlib import Path

from gossamer.resources.reference import BEGIN, END, render

PAGE = Path(__file__).resolve().parents[3] / "docs" / "resources.md"


def test_the_committed_reference_matches_the_models() -> None:
    text = PAGE.read_text(encoding="utf-8")
    generated = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert generated.strip() == render().strip(), "run `make docs` and commit docs/resources.md"


def test_the_reference_names_every_kind_and_marks_opaque_parts() -> None:
    text = render()
    for title in (
        "### Service (v1)",
        "### Ingress (extensions/v1beta1, networking.k8s.io/v1beta1)",
        "### VirtualService (networking.istio.io/v1, networking.istio.io/v1alpha3, "
        "networking.istio.io/v1beta1)",
        "### ApiProduct (gossamer.dev/v1alpha1)",
    ):
        assert title in text
    assert "| `spec.template.spec.affinity` | any | kept as given, not checked inside |" in text
