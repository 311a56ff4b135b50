"""The control plane's HTTP API against its own OpenAPI description, with schemathesis.

schemathesis generates requests for every operation in `/openapi.json`, valid ones and odd ones;
no request may be answered with a 5xx, and every answer must be one the document describes.
Without a token every operation is a 401, with a token nobody issued a 403.

The control plane runs in a thread with its own event loop, since schemathesis' client is
synchronous. Its watches end after a few milliseconds, so a generated `watch=true` is a short
stream rather than a 30-minute one. Before the run, each resource gets one real object (from
the reference examples); half of the generated requests for a single object name it, so that
reads, replaces, patches and deletes also meet objects that exist.
"""

from __future__ import annotations

import asyncio
import json
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
from schemathesis import Case, HookContext
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gossamer.control.api.catalog import Catalog, ServedResource
from gossamer.control.api.openapi import OpenApi
from gossamer.control.api.resources import ApiSettings
from gossamer.control.server import ControlPlane, ControlPlaneConfig
from gossamer.control.store import StoreSettings
from gossamer.listen import Listen
from gossamer.resources.yamlsource import read_documents

EXAMPLES_WITH_TOKEN = 8
"""Generated requests per operation with the admin token (about 30 s for all on 2 cores)."""
EXAMPLES_WITHOUT_TOKEN = 1
"""Per operation without a token and with a wrong one: the check in front decides alone."""

# A short history, so that generated watches from small versions also meet 410 Gone.
STORE = StoreSettings(history=20, compact_every=5)
API = ApiSettings(watch_timeout_s=0.05, max_watch_timeout_s=0.05)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance]
REFERENCE_EXAMPLES = Path(__file__).parents[2] / "unit/resources/reference_examples"
SEEDED_NAMESPACE = "default"
OpenApiCase = Case[Any]


class ThreadedControlPlane:
    """A `ControlPlane` on its own event loop in a thread; `start` waits with a deadline."""

    def __init__(self, config: ControlPlaneConfig) -> None:
        self.config = config
        self.url = ""
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="control-plane", daemon=True)

    @property
    def token(self) -> str:
        """The admin token."""
        return (self.config.state_dir / "admin-token").read_text().strip()

    def start(self, timeout: float = 30.0) -> str:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the control plane did not start in {timeout}s")
        if self._failure is not None:
            raise RuntimeError("the control plane did not start") from self._failure
        return self.url

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the control plane did not stop in {timeout}s"
        if self._failure is not None:
            raise RuntimeError("the control plane failed") from self._failure

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported by start() or stop(), in the test's thread
            self._failure = error
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with ControlPlane(self.config) as plane:
            self.url = plane.url
            self._ready.set()
            await self._stop.wait()


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedControlPlane]:
    state = tmp_path_factory.mktemp("api-schema") / "state"
    config = ControlPlaneConfig(
        state_dir=state,
        listen=Listen("127.0.0.1", 0),
        api=API,
        store_settings=STORE,
        graceful_s=1.0,
        tls=False,  # the API's schema, whatever carries it
    )
    running = ThreadedControlPlane(config)
    running.start()
    yield running
    running.stop()


def _seeded_name(served: ServedResource) -> str:
    return f"example-{served.version}"


def _candidates(served: ServedResource) -> Iterator[dict[str, Any]]:
    """Manifests of the kind: the reference examples, then a bare object for lenient kinds."""
    for path in sorted(REFERENCE_EXAMPLES.glob("*.yaml")):
        for document in read_documents(path.read_text(encoding="utf-8"), str(path)):
            if isinstance(document.data, dict) and document.data.get("kind") == served.kind:
                yield document.data
    yield {"kind": served.kind, "metadata": {}}


@pytest.fixture(scope="module")
def seeded(plane: ThreadedControlPlane) -> list[str]:
    """One object per served resource and version that some manifest of its kind fits."""
    headers = {"Authorization": f"Bearer {plane.token}"}
    created = []
    with httpx.Client(base_url=plane.url, headers=headers, timeout=10.0) as http:
        for served in Catalog():
            url = f"{served.base_path}/namespaces/{SEEDED_NAMESPACE}/{served.plural}"
            for manifest in _candidates(served):
                metadata = {"name": _seeded_name(served)}
                body = {**manifest, "apiVersion": served.api_version, "metadata": metadata}
                response = http.post(url, json=body)
                assert response.status_code < 500, response.text
                if response.status_code == 201:
                    created.append(f"{url}/{_seeded_name(served)}")
                    break
    # Most kinds have a reference example or need no spec; a few are left to generated data.
    assert len(created) > len(list(Catalog())) // 2, created
    return created


def _schema(examples: int) -> BaseSchema:
    config = schemathesis.Config.from_dict(
        {
            "request-timeout": 10.0,
            "generation": {
                "max-examples": examples,
                "deterministic": True,
                # The token is ours to send (or not); generated Authorization headers would
                # turn the test of a missing token into one of a wrong token.
                "with-security-parameters": False,
            },
            # The coverage phase takes minutes over ~200 operations with large bodies.
            "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
            # Generating large bodies is slow on a loaded machine; the run is bounded anyway.
            "suppress-health-check": ["too_slow"],
        }
    )
    return schemathesis.openapi.from_dict(DOCUMENT, config=config)


# Built here, where pytest collects one test per operation; the plane serves this very document.
DOCUMENT = OpenApi(Catalog()).document
SEEDED_NAMES = {
    f"{served.base_path}/namespaces/{{namespace}}/{served.plural}/{{name}}": _seeded_name(served)
    for served in Catalog()
}
admin = _schema(EXAMPLES_WITH_TOKEN)
anyone = _schema(EXAMPLES_WITHOUT_TOKEN)


def _half_of(context: HookContext, value: object) -> bool:
    """A fair, repeatable choice that differs between operations.

    Every operation's test runs with the same derandomized seed, so a choice drawn by
    hypothesis would fall the same way for all of them; this one depends on the operation.
    """
    assert context.operation is not None
    return zlib.crc32(f"{context.operation.label} {value!r}".encode()) % 2 == 0


@admin.hook
def map_path_parameters(context: HookContext, path_parameters: dict[str, Any]) -> dict[str, Any]:
    """Half of the requests for one object name the seeded one."""
    assert context.operation is not None
    name = SEEDED_NAMES.get(context.operation.path)
    if name is None or not _half_of(context, path_parameters):
        return path_parameters
    return {**path_parameters, "namespace": SEEDED_NAMESPACE, "name": name}


@admin.hook
def map_body(context: HookContext, body: Any) -> Any:
    """Half of the patches are one that applies to any object (few random ones do)."""
    assert context.operation is not None
    if context.operation.method.upper() != "PATCH" or not _half_of(context, body):
        return body
    return {"metadata": {"labels": {"patched": "yes"}}}


def _agree_with_the_url(case: OpenApiCase) -> None:
    """A write to the seeded object names it in its body as the URL does, as clients do."""
    parameters = case.path_parameters or {}
    name = SEEDED_NAMES.get(case.operation.path)
    if name is None or parameters.get("name") != name:
        return
    body = case.body
    metadata = body.get("metadata") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(metadata, dict):
        identity = {"name": name, "namespace": parameters["namespace"]}
        case.body = {**body, "metadata": {**metadata, **identity}}


def _is_watch(case: OpenApiCase) -> bool:
    value = (case.query or {}).get("watch")
    return str(value).lower() in ("true", "1")


def _check_watch_events(case: OpenApiCase, response: Response) -> None:
    """A watch's body is not one JSON document but one event per line, which the document
    cannot say: each line is a WatchEvent whose object reads as a GET of the item would."""
    if response.status_code != 200:
        case.validate_response(response, checks=[response_schema_conformance])
        return
    item = _validator(_item_response_schema(case.operation.path))
    event = _validator({"$ref": "#/components/schemas/WatchEvent"})
    status = _validator({"$ref": "#/components/schemas/Status"})
    for line in response.text.splitlines():
        parsed = json.loads(line)
        event.validate(parsed)
        (status if parsed["type"] == "ERROR" else item).validate(parsed["object"])


def _item_response_schema(collection: str) -> dict[str, Any]:
    base, _, plural = collection.rpartition("/")
    if not base.endswith("/namespaces/{namespace}"):
        base += "/namespaces/{namespace}"
    read = DOCUMENT["paths"][f"{base}/{plural}/{{name}}"]["get"]
    schema: dict[str, Any] = read["responses"]["200"]["content"]["application/json"]["schema"]
    return schema


def _validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    # The document's components ride along so that its `#/components/...` references resolve.
    return jsonschema.Draft202012Validator({**schema, "components": DOCUMENT["components"]})


def test_the_plane_serves_the_document_under_test(plane: ThreadedControlPlane) -> None:
    headers = {"Authorization": f"Bearer {plane.token}"}
    response = httpx.get(f"{plane.url}/openapi.json", headers=headers, timeout=10.0)
    assert response.status_code == 200, response.text
    assert response.json() == json.loads(json.dumps(DOCUMENT))


@admin.parametrize()
def test_no_request_is_a_server_error_and_every_answer_is_documented(
    case: OpenApiCase, plane: ThreadedControlPlane, seeded: list[str]
) -> None:
    _agree_with_the_url(case)
    response = case.call(base_url=plane.url, headers={"Authorization": f"Bearer {plane.token}"})
    case.validate_response(response, checks=CHECKS)
    if _is_watch(case):
        _check_watch_events(case, response)
    else:
        case.validate_response(response, checks=[response_schema_conformance])


@anyone.parametrize()
def test_every_operation_is_401_without_a_token_and_403_with_a_wrong_one(
    case: OpenApiCase, plane: ThreadedControlPlane
) -> None:
    anonymous = case.call(base_url=plane.url)
    case.validate_response(anonymous, checks=CHECKS)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["www-authenticate"][0].startswith("Bearer")
    stranger = case.call(base_url=plane.url, headers={"Authorization": "Bearer not-issued"})
    case.validate_response(stranger, checks=CHECKS)
    assert stranger.status_code == 403, stranger.text
