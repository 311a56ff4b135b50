"""An ApiProduct's documentation: OpenAPI documents read and checked, combined into the
product's own (its routes' operations, its key as the security), and put in the page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gossamer.apidocs import page, template
from gossamer.apidocs.spec import OpenApiError, RouteMatch, combine, parse
from gossamer.resources import load_text
from gossamer.resources.analysis import analyze

DOCUMENT = """
openapi: 3.0.3
info: {title: records, version: "2.1.0"}
paths:
  /records:
    get:
      summary: List records
      security: [{oauth: []}]
      responses: {"200": {description: the records}}
    post:
      summary: Add a record
      responses: {"201": {description: added}}
  /records/{id}:
    parameters: [{name: id, in: path, required: true, schema: {type: string}}]
    get:
      summary: One record
      responses: {"200": {description: the record, content: {application/json: {schema: {$ref: "#/components/schemas/Record"}}}}}
  /admin/reset:
    post: {summary: Reset, responses: {"204": {description: done}}}
components:
  schemas:
    Record: {type: object, properties: {id: {type: string}}}
"""


def test_a_product_keeps_the_operations_its_routes_reach_behind_its_key() -> None:
    combined = combine(
        [parse(DOCUMENT)],
        [RouteMatch("prefix", "/records", ("GET",))],
        title="Records",
        description="For partners",
        hosts=["api.example", "*.example"],
        key_header="x-api-key",
        key_param="apikey",
    )
    assert {path: sorted(ops) for path, ops in combined["paths"].items()} == {
        "/records": ["get"],
        "/records/{id}": ["get"],
    }
    one = combined["paths"]["/records/{id}"]["get"]
    assert one["parameters"][0]["name"] == "id"  # the path item's parameters, on the operation
    assert "security" not in combined["paths"]["/records"]["get"]  # the product's key instead
    assert combined["security"] == [{"apiKeyHeader": []}, {"apiKeyQuery": []}]
    schemes = combined["components"]["securitySchemes"]
    assert schemes["apiKeyHeader"] == {"type": "apiKey", "in": "header", "name": "x-api-key"}
    assert schemes["apiKeyQuery"]["in"] == "query"
    assert combined["servers"] == [{"url": "https://api.example"}]
    assert combined["info"] == {
        "title": "Records",
        "version": "2.1.0",
        "description": "For partners",
    }
    assert "Record" in combined["components"]["schemas"]


def test_exact_and_regex_routes_fill_path_parameters_to_match() -> None:
    document = parse(DOCUMENT)
    exact = combine([document], [RouteMatch("exact", "/admin/reset")], title="t", description="",
                    hosts=[], key_header="x-api-key", key_param="")  # fmt: skip
    assert list(exact["paths"]) == ["/admin/reset"]
    assert exact["servers"] == [{"url": "/"}]
    regex = combine([document], [RouteMatch("regex", r"/records/[0-9]+")], title="t",
                    description="", hosts=[], key_header="", key_param="k")  # fmt: skip
    assert list(regex["paths"]) == ["/records/{id}"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("openapi: 3.0.0\npaths: {a: {get: {}}}", "does not start with /"),
        ('swagger: "2.0"\npaths: {}', "must be a 3.x version (found none"),
        ("openapi: 3.1.0\npaths: [1]", "paths: must be an object"),
        ("openapi: 3.0.0\n  paths: x: y", "line 2"),
        ("- a list", "not a mapping"),
    ],
)
def test_what_is_not_openapi_3_says_why(text: str, message: str) -> None:
    with pytest.raises(OpenApiError, match=re.escape(message)):
        parse(text)


def test_the_page_carries_the_document_and_a_script_tag_in_it_cannot_end_the_script() -> None:
    combined = {"openapi": "3.0.3", "info": {"title": "</script><b>x", "version": "1"}, "paths": {}}
    html = page(json.dumps(combined), template()).decode()
    assert "</script><b>" not in html
    start = html.index('<script id="spec" type="application/json">') + len(
        '<script id="spec" type="application/json">'
    )
    embedded = html[start : html.index("</script>", start)]
    assert json.loads(embedded) == combined


def test_validate_names_a_missing_configmap_key_and_a_document_that_does_not_parse(
    tmp_path: Path,
) -> None:
    text = """
apiVersion: v1
kind: ConfigMap
metadata: {name: specs}
data:
  good.yaml: "openapi: 3.0.3\\npaths: {}"
  bad.yaml: "swagger: '2.0'"
---
apiVersion: gossamer.dev/v1alpha1
kind: ApiProduct
metadata: {name: records}
spec:
  routes: [{uri: {prefix: /records}}]
  plans: [{name: free}]
  openapi:
    specs:
      - configMapKeyRef: {name: specs, key: good.yaml}
      - configMapKeyRef: {name: specs, key: missing.yaml}
      - configMapKeyRef: {name: specs, key: bad.yaml}
      - configMapKeyRef: {name: elsewhere, key: a.yaml}
"""
    loaded = load_text(text, "api.yaml")
    assert loaded.problems == []
    found = [(p.line, p.message) for p in analyze(loaded.resources)]
    assert found == [
        (18, "ConfigMap specs has no key missing.yaml"),
        (19, "specs/bad.yaml is not OpenAPI 3: openapi: must be a 3.x version (found none; "
             "Swagger 2 is not read)"),
        (20, "no ConfigMap elsewhere in namespace default"),
    ]  # fmt: skip
