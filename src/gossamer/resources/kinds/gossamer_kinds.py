"""Gossamer's own kinds (`gossamer.dev/v1alpha1`): Topic for events, ApiProduct for the gateway."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal

from jsonschema import SchemaError
from jsonschema.validators import validator_for
from pydantic import Field

from gossamer.resources.base import (
    DnsLabel,
    Duration,
    Finding,
    Model,
    Positive,
    Resource,
    ranged,
)
from gossamer.resources.kinds.istio_networking import Headers, StringMatch

GOSSAMER_VERSIONS = ("v1alpha1",)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NONZERO = re.compile(r"[1-9]")


class Retention(Model):
    """How long, or how much, history a topic keeps; both bounds apply when both are given."""

    time: Duration | None = None
    bytes: Positive | None = None


class Compaction(Model):
    """Keep only the newest event of each key once events are older than minLag."""

    enabled: bool = False
    min_lag: Duration | None = None


class DeadLetter(Model):
    """Where an event goes after it failed maxDeliveries times."""

    topic: DnsLabel
    max_deliveries: Annotated[int, ranged(1, 1000)] = 5


class TopicSpec(Model):
    """A durable, partitioned stream of events."""

    description: str | None = None
    partitions: Annotated[int, ranged(1, 1024)] = 1
    retention: Retention | None = None
    compaction: Compaction | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    dead_letter: DeadLetter | None = None


class Topic(Resource):
    """`gossamer.dev/v1alpha1` Topic."""

    GROUP: ClassVar[str] = "gossamer.dev"
    KIND: ClassVar[str] = "Topic"
    PLURAL: ClassVar[str] = "topics"
    VERSIONS: ClassVar[tuple[str, ...]] = GOSSAMER_VERSIONS

    spec: TopicSpec = Field(default_factory=TopicSpec)

    def check(self) -> Iterator[Finding]:
        """The payload schema is a valid JSON Schema; a topic is not its own dead-letter topic."""
        if self.spec.schema_ is not None:
            validator = validator_for(self.spec.schema_)
            try:
                validator.check_schema(self.spec.schema_)
            except SchemaError as error:
                where = ".".join(str(part) for part in error.absolute_path)
                detail = f" at {where}" if where else ""
                yield Finding(
                    ("spec", "schema", *error.absolute_path),
                    f"not a valid JSON Schema{detail}: {error.message}",
                )
        if self.spec.dead_letter is not None and self.spec.dead_letter.topic == self.name:
            yield Finding(("spec", "deadLetter", "topic"), "a topic cannot be its own dead letter")


class ApiRoute(Model):
    """Requests that belong to the product, matched like an Istio HTTP match; a plan may
    name the routes it includes."""

    name: DnsLabel | None = None
    uri: StringMatch
    methods: list[str] = Field(default_factory=list)


class ApiKeyLocation(Model):
    """Where clients put their key: a header (default x-api-key) or a query parameter."""

    header: str | None = "x-api-key"
    query_param: str | None = None


class RateLimit(Model):
    """A token bucket: `requests` per `per`, with bursts up to `burst`."""

    requests: Positive
    per: Duration
    burst: Positive | None = None


class Quota(Model):
    """A count of requests per calendar period, reset at its start (UTC)."""

    requests: Positive
    period: Literal["hour", "day", "week", "month"]


class Plan(Model):
    """A tier of service: the routes it includes, its rate limit and quota, and what the gateway
    does when it cannot reach the control plane that holds the shared budget."""

    name: DnsLabel
    routes: list[str] = Field(default_factory=list)
    """Names of the product's routes the plan includes; empty: every route."""
    rate_limit: RateLimit | None = None
    quota: Quota | None = None
    failure_mode: Literal["open", "closed"] = "open"
    max_request_bytes: Positive | None = None
    """Requests with a larger body are refused with 413."""


class ApiKey(Model):
    """A consumer's key, never in clear text: its SHA-256, or a file that holds it."""

    sha256: str | None = None
    from_file: str | None = None


class Consumer(Model):
    """A client of the product, its plan and its keys."""

    name: DnsLabel
    plan: str
    keys: list[ApiKey]


class OpenApiConfigMapRef(Model):
    """A key of a ConfigMap in the product's namespace that holds an OpenAPI 3 document."""

    name: str
    key: str


class OpenApiSource(Model):
    """One service's OpenAPI document."""

    config_map_key_ref: OpenApiConfigMapRef


class ApiDocs(Model):
    """The product's API documentation, from its services' OpenAPI documents: the gateway serves
    the combined spec at `PATH/openapi.json` and a page for consumers at `PATH`."""

    specs: list[OpenApiSource]
    path: Annotated[str, Field(pattern=r"^/[A-Za-z0-9._~/-]*$")] = "/docs"
    title: str | None = None
    validate_requests: bool = False
    """Refuse with 400 a request the document says is wrong (its parameters and JSON body)."""


class ApiProductSpec(Model):
    """An API exposed at the gateway with keys, rate limits and quotas."""

    description: str | None = None
    hosts: list[str] = Field(default_factory=list)
    gateways: list[str] = Field(default_factory=list)
    routes: list[ApiRoute]
    api_key: ApiKeyLocation = Field(default_factory=ApiKeyLocation)
    plans: list[Plan]
    consumers: list[Consumer] = Field(default_factory=list)
    openapi: ApiDocs | None = None
    headers: Headers | None = None
    """Header changes on the product's requests (upstream) and responses."""


class ApiProduct(Resource):
    """`gossamer.dev/v1alpha1` ApiProduct."""

    GROUP: ClassVar[str] = "gossamer.dev"
    KIND: ClassVar[str] = "ApiProduct"
    PLURAL: ClassVar[str] = "apiproducts"
    VERSIONS: ClassVar[tuple[str, ...]] = GOSSAMER_VERSIONS

    spec: ApiProductSpec

    def check(self) -> Iterator[Finding]:
        """Plans and consumers are named once; consumers name a plan; keys are well formed."""
        spec = self.spec
        if not spec.routes:
            yield Finding(("spec", "routes"), "must list at least one route")
        if not spec.plans:
            yield Finding(("spec", "plans"), "must list at least one plan")
        if spec.api_key.header is None and spec.api_key.query_param is None:
            yield Finding(("spec", "apiKey"), "needs a header or a queryParam")
        routes = {route.name for route in spec.routes if route.name is not None}
        plans: dict[str, int] = {}
        for index, plan in enumerate(spec.plans):
            if plan.name in plans:
                yield Finding(("spec", "plans", index, "name"), f"plan {plan.name} is listed twice")
            plans.setdefault(plan.name, index)
            for r, name in enumerate(plan.routes):
                if name not in routes:
                    known = ", ".join(sorted(routes)) or "no route has a name"
                    yield Finding(
                        ("spec", "plans", index, "routes", r), f"no route named {name} ({known})"
                    )
            if plan.rate_limit is not None and not _NONZERO.search(plan.rate_limit.per):
                yield Finding(
                    ("spec", "plans", index, "rateLimit", "per"), "must be longer than 0s"
                )
        consumers: set[str] = set()
        for index, consumer in enumerate(spec.consumers):
            path = ("spec", "consumers", index)
            if consumer.name in consumers:
                yield Finding((*path, "name"), f"consumer {consumer.name} is listed twice")
            consumers.add(consumer.name)
            if consumer.plan not in plans:
                known = ", ".join(plans) or "none"
                yield Finding((*path, "plan"), f"no plan named {consumer.plan} (plans: {known})")
            if not consumer.keys:
                yield Finding((*path, "keys"), "must list at least one key")
            for k, key in enumerate(consumer.keys):
                if (key.sha256 is None) == (key.from_file is None):
                    yield Finding((*path, "keys", k), "give exactly one of sha256 or fromFile")
                elif key.sha256 is not None and not _SHA256.fullmatch(key.sha256):
                    yield Finding(
                        (*path, "keys", k, "sha256"), "must be 64 lowercase hexadecimal digits"
                    )
