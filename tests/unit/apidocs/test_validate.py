"""Requests checked against an OpenAPI document: the operation found by method and path
template, parameters turned into their schema's type, a JSON body, the failing field named."""

from __future__ import annotations

from gossamer.apidocs.spec import parse
from gossamer.apidocs.validate import Problem, RequestValidator

DOCUMENT = parse(
    """
openapi: 3.0.3
paths:
  /assets/mine:
    get: {responses: {}}
  /assets/{assetId}:
    parameters: [{name: assetId, in: path, required: true, schema: {type: string, pattern: "^a-[0-9]+$"}}]
    get:
      parameters:
        - {name: full, in: query, schema: {type: boolean}}
        - {name: tags, in: query, schema: {type: array, items: {type: string, enum: [x, y]}}}
      responses: {}
    put:
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties: {note: {type: string, nullable: true}, level: {$ref: "#/components/schemas/Level"}}
      responses: {}
components:
  schemas:
    Level: {type: integer, enum: [1, 2, 3]}
"""
)


def test_a_literal_path_is_not_taken_for_a_parameter() -> None:
    validator = RequestValidator(DOCUMENT)
    mine = validator.operation(b"GET", "/assets/mine")
    assert mine is not None and mine.parameters == ()
    one = validator.operation(b"GET", "/assets/a-1")
    assert one is not None and [p.name for p in one.parameters] == ["assetId", "full", "tags"]
    assert validator.operation(b"DELETE", "/assets/a-1") is None
    assert validator.operation(b"GET", "/elsewhere") is None


def test_parameters_are_read_as_their_schemas_type() -> None:
    one = RequestValidator(DOCUMENT).operation(b"GET", "/assets/a-1")
    assert one is not None
    assert one.check_head("/assets/a-1", "full=true&tags=x&tags=y", []) is None
    problem = one.check_head("/assets/a-1", "full=maybe", [])
    assert problem is not None and problem.field == "query.full"
    assert one.check_head("/assets/a-1", "tags=z", []) == Problem(
        "query.tags", "query.tags: 'z' is not one of ['x', 'y']"
    )
    bad_path = one.check_head("/assets/b-1", "", [])
    assert bad_path is not None and bad_path.field == "path.assetId"


def test_a_body_follows_references_and_nullable() -> None:
    put = RequestValidator(DOCUMENT).operation(b"PUT", "/assets/a-1")
    assert put is not None and put.wants_body
    assert put.check_body(b'{"note": null, "level": 2}') is None
    assert put.check_body(b"") is None  # not required
    problem = put.check_body(b'{"level": 7}')
    assert problem is not None and problem.field == "body.level"
