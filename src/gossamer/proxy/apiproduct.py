"""API products at a gateway listener: which product a request is for, whose key it carries,
whether the key's plan includes the route, and whether the consumer's budget admits it.

Compiled once per snapshot (`ProductGate`); per request it is a few prefix checks, one SHA-256
of the key, dictionary lookups and `Allowance.take`. `ProductExchange` is the gateway's
exchange: it asks the gate after routing and the listener's guard, before the request goes on.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

import msgspec

from gossamer.proxy.budget import (
    ADMIT,
    QUOTA_EXCEEDED,
    UNAVAILABLE,
    WAIT,
    Allowance,
    Budgets,
)
from gossamer.proxy.exchange import Exchange
from gossamer.proxy.router import CompiledHeaderOps, CompiledRoute, compile_header_ops
from gossamer.proxy.stats import ProxyStats
from gossamer.snapshot.model import ApiPlan, ApiProduct
from gossamer.snapshot.periods import PERIOD_SECONDS

if TYPE_CHECKING:
    from gossamer.apidocs.validate import Operation, Problem, RequestValidator
    from gossamer.proxy.codec import ClientSide
    from gossamer.proxy.http1 import RequestHead

API_KEY_DENIED = "AK"
"""Access-log flag of a request refused for its API key (missing, unknown, expired)."""
API_PLAN_DENIED = "AP"
"""Access-log flag of a key whose plan does not include the route."""
API_LIMITED = "RL"
"""Access-log flag of a request over its plan's rate limit or quota (Envoy's flag)."""
API_BAD_REQUEST = "AB"
"""Access-log flag of a request whose key is given twice or malformed."""
MAX_KEY_BYTES = 256
REQUESTS_METRIC = "gossamer_apiproduct_requests_total"
CONSUMER_HEADER = b"x-api-consumer"
"""The consumer an admitted request's key belongs to, for the upstream."""


MAX_CHECKED_BODY = 65536
"""The largest body a product's document is checked against (it is held until whole)."""

DIGESTS_KEPT = 4096
"""Distinct keys whose SHA-256 a gateway keeps (hashing is a third of a product's decision)."""


class Verdict:
    """The gate's answer: admit (`status` 0), refuse, or wait for a lease (`wait`)."""

    __slots__ = (
        "consumer",
        "extra",
        "flag",
        "limits",
        "plan",
        "product",
        "reason",
        "status",
        "wait",
    )

    def __init__(
        self,
        status: int,
        reason: str = "",
        *,
        flag: str = "-",
        consumer: str = "",
        extra: list[tuple[bytes, bytes]] | None = None,
        wait: asyncio.Future[None] | None = None,
        product: CompiledProduct | None = None,
        plan: ApiPlan | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.flag = flag
        self.consumer = consumer
        self.extra = extra
        self.wait = wait
        self.product = product
        """The product an admitted request belongs to (its header changes)."""
        self.plan = plan
        self.limits: list[tuple[bytes, bytes]] | None = None
        """An admitted request's RateLimit-Policy and RateLimit, for its response."""


class ProductRoute:
    """One route of a product: a path match, compiled, and its methods."""

    __slots__ = ("kind", "methods", "pattern", "value")

    def __init__(self, kind: str, value: str, ignore_case: bool, methods: tuple[str, ...]) -> None:
        self.kind = kind
        self.value = value.lower() if ignore_case else value
        flags = re.IGNORECASE if ignore_case else 0
        self.pattern = re.compile(value, flags) if kind == "regex" else None
        self.methods = frozenset(method.encode() for method in methods)

    def matches(self, path: str, method: bytes) -> bool:
        """Whether a request with this path and method belongs to the route."""
        if self.methods and method not in self.methods:
            return False
        if self.kind == "prefix":
            return path.startswith(self.value)
        if self.kind == "exact":
            return path == self.value
        assert self.pattern is not None
        return self.pattern.fullmatch(path) is not None


class CompiledProduct:
    """One product as the gate reads it."""

    __slots__ = (
        "hosts",
        "key_header",
        "key_param",
        "keys",
        "metric",
        "name",
        "plans",
        "request_ops",
        "response_ops",
        "routes",
        "validator",
    )

    def __init__(self, config: ApiProduct) -> None:
        self.name = config.name
        self.hosts = frozenset(config.hosts)
        self.routes = [
            ProductRoute(route.path.kind, route.path.value, route.path.ignore_case, route.methods)
            for route in config.routes
        ]
        self.key_header = config.key_header.encode("latin-1")
        self.key_param = config.key_param
        plans = {plan.name: plan for plan in config.plans}
        self.plans: dict[str, ApiPlan] = {
            consumer: plans[plan] for consumer, plan in config.consumers if plan in plans
        }
        self.keys: dict[str, tuple[str, float]] = {
            key.sha256: (key.consumer, key.expires_at)
            for key in config.keys
            if key.consumer in self.plans
        }
        self.metric: dict[tuple[str, str], str] = {}
        self.request_ops = compile_header_ops(config.request_headers)
        self.response_ops = compile_header_ops(config.response_headers)
        self.validator: RequestValidator | None = None
        if config.validate_requests and config.openapi:
            # Only a gateway whose product asks for it loads jsonschema.
            from gossamer.apidocs.validate import RequestValidator  # noqa: PLC0415

            self.validator = RequestValidator(msgspec.json.decode(config.openapi))

    def route_of(self, authority: str, path: str, method: bytes) -> int:
        """The index of the product's route a request matches, or -1."""
        if self.hosts:
            host = authority.rsplit(":", 1)[0] if authority[-1:].isdigit() else authority
            if host.lower() not in self.hosts:
                return -1
        for index, route in enumerate(self.routes):
            if route.matches(path, method):
                return index
        return -1

    def counter(self, consumer: str, decision: str) -> str:
        """The metric's name with labels, made once per consumer and decision."""
        key = (consumer, decision)
        name = self.metric.get(key)
        if name is None:
            labels = f'product="{self.name}",consumer="{consumer}",decision="{decision}"'
            name = self.metric[key] = f"{REQUESTS_METRIC}{{{labels}}}"
        return name


class ProductGate:
    """Every product a gateway listener enforces, under one snapshot."""

    __slots__ = ("budgets", "digests", "documents", "hash", "products", "stats", "validating")

    def __init__(
        self, products: tuple[ApiProduct, ...], budgets: Budgets, stats: ProxyStats
    ) -> None:
        # hashlib costs a proxy 1.9 MB of OpenSSL: only a gateway with products loads it.
        import hashlib  # noqa: PLC0415

        sha256 = hashlib.sha256
        self.hash: Callable[[bytes], str] = lambda data: sha256(data).hexdigest()
        self.digests: dict[bytes, str] = {}
        """Recent keys' digests: a client sends the same key again and again."""
        self.products = [CompiledProduct(product) for product in products]
        self.documents = _documents(products)
        self.validating = any(product.validator is not None for product in self.products)
        """Some product checks request bodies: exchanges keep theirs until they are whole."""
        """Path to (hosts, content type, body) of each documentation page and spec."""
        self.budgets = budgets
        self.stats = stats
        for product in self.products:
            for consumer, plan in product.plans.items():
                budgets.allowance(product.name, consumer, plan).adopt(plan)
        budgets.retire(
            {(product.name, consumer) for product in self.products for consumer in product.plans}
        )

    def __repr__(self) -> str:
        return f"<ProductGate {len(self.products)} products {self.budgets!r}>"

    def document(self, authority: str, path: str) -> tuple[bytes, bytes] | None:
        """(content type, body) of a product's documentation at this host and path, if any."""
        entries = self.documents.get(path)
        if entries is None:
            return None
        name, colon, port = authority.rpartition(":")
        host = (name if colon and port.isdigit() and not name.endswith(":") else authority).lower()
        for hosts, content_type, body in entries:
            if not hosts or host in hosts:
                return content_type, body
        return None

    def decide(self, exchange: Exchange, target: bytes) -> Verdict | None:
        """The verdict on a request, or None when it belongs to no product."""
        method = exchange.head.method
        for product in self.products:
            route = product.route_of(exchange.authority, exchange.path, method)
            if route >= 0:
                return self._decide(product, route, exchange, target)
        return None

    def _decide(
        self, product: CompiledProduct, route: int, exchange: Exchange, target: bytes
    ) -> Verdict:
        key, problem = _key_of(product, exchange.head.headers, target)
        if problem:
            verdict = Verdict(400, problem, flag=API_BAD_REQUEST)
            return self._count(product, "", "bad_request", verdict)
        if key is None:
            where = _where(product)
            verdict = Verdict(401, f"api key required in {where}", flag=API_KEY_DENIED)
            return self._count(product, "", "missing_key", verdict)
        digests = self.digests
        digest = digests.get(key)
        if digest is None:
            # Only well-formed keys are kept: a key seen before needs no second look.
            if not _well_formed(key):
                verdict = Verdict(401, "malformed api key", flag=API_KEY_DENIED)
                return self._count(product, "", "unknown_key", verdict)
            if len(digests) >= DIGESTS_KEPT:
                digests.clear()  # made-up keys must not grow it without end
            digest = digests[key] = self.hash(key)
        found = product.keys.get(digest)
        if found is None or (found[1] and found[1] <= time.time()):
            verdict = Verdict(401, "unknown or revoked api key", flag=API_KEY_DENIED)
            return self._count(product, "", "unknown_key", verdict)
        consumer = found[0]
        plan = product.plans[consumer]
        if plan.routes is not None and route not in plan.routes:
            reason = f"plan {plan.name} does not include this route"
            verdict = Verdict(403, reason, flag=API_PLAN_DENIED, consumer=consumer)
            return self._count(product, consumer, "forbidden", verdict)
        admitted = Verdict(0, consumer=consumer, product=product, plan=plan)
        if plan.rate <= 0 and plan.quota <= 0:
            # A plan without limits spends no budget: no lease to wait for.
            return self._count(product, consumer, "allowed", admitted)
        allowance = self.budgets.allowance(product.name, consumer, plan)
        now = time.monotonic()
        outcome = allowance.take(now)
        if outcome == ADMIT:
            admitted.limits = allowance.ratelimit_headers(now)
            return self._count(product, consumer, "allowed", admitted)
        if outcome == WAIT:
            admitted.wait = allowance.wait()
            return admitted
        if outcome == UNAVAILABLE:
            verdict = Verdict(503, "api budget unavailable", flag=API_LIMITED, consumer=consumer)
            return self._count(product, consumer, "unavailable", verdict)
        return self._limited(product, plan, allowance, outcome, now)

    def _limited(
        self,
        product: CompiledProduct,
        plan: ApiPlan,
        allowance: Allowance,
        outcome: int,
        now: float,
    ) -> Verdict:
        wait = max(1, math.ceil(allowance.retry_after(now)))
        if outcome == QUOTA_EXCEEDED:
            reason, decision = f"quota of plan {plan.name} exceeded", "quota_exceeded"
            policy = f'"{plan.name}-quota";q={plan.quota};w={PERIOD_SECONDS[plan.quota_period]}'
            state = f'"{plan.name}-quota";r=0;t={wait}'
        else:
            reason, decision = f"rate limit of plan {plan.name} exceeded", "rate_limited"
            policy = f'"{plan.name}";q={int(plan.burst)};w={_seconds(plan.window)}'
            state = f'"{plan.name}";r=0;t={wait}'
        extra = [
            (b"retry-after", str(wait).encode()),
            (b"ratelimit-policy", policy.encode("latin-1")),
            (b"ratelimit", state.encode("latin-1")),
        ]
        verdict = Verdict(429, reason, flag=API_LIMITED, consumer=allowance.consumer, extra=extra)
        return self._count(product, allowance.consumer, decision, verdict)

    def _count(self, product: CompiledProduct, consumer: str, decision: str, v: Verdict) -> Verdict:
        counters = self.stats.counters
        name = product.counter(consumer, decision)
        counters[name] = counters.get(name, 0) + 1
        return v


class ProductExchange(Exchange):
    """A gateway request: past routing and the guard, its API product decides, then it goes on."""

    __slots__ = ("body_plan", "consumer", "held", "limits", "raw_body", "response_ops")

    consumer: str
    """The API consumer whose key the request carried, for the access log (set on dispatch)."""
    body_plan: ApiPlan | None
    """The plan whose `max_request_bytes` the body is counted against (None: no limit)."""
    response_ops: CompiledHeaderOps | None
    held: tuple[Operation, CompiledRoute, bytes] | None
    """A request whose body is checked before it goes on (apidocs/validate.py)."""
    raw_body: bytearray | None
    """The body as it came, while a product may check it."""
    limits: list[tuple[bytes, bytes]] | None
    """RateLimit-Policy and RateLimit for the response of a request its plan limits."""

    def __init__(self, client: ClientSide, head: RequestHead) -> None:
        super().__init__(client, head)
        # Set before any body arrives: a request queued behind another gets its body first.
        self.consumer = ""
        self.body_plan = None
        self.response_ops = None
        self.held = None
        self.raw_body = None
        self.limits = None

    def _dispatch(self, route: CompiledRoute, target: bytes) -> None:
        gate = self.runtime.products
        verdict = gate.decide(self, target) if gate is not None else None
        self.consumer = ""
        self.body_plan = None
        self.response_ops = None
        self.held = None
        self.limits = None
        if verdict is not None:
            self.consumer = verdict.consumer
            self.limits = verdict.limits
            wait = verdict.wait
            if wait is not None:
                wait.add_done_callback(lambda _: self._after_lease(route, target))
                return
            if verdict.status:
                self.local(verdict.status, verdict.reason, verdict.flag, extra=verdict.extra)
                return
            product, plan = verdict.product, verdict.plan
            if product is not None and plan is not None:
                if not self._admit_product(product, plan, verdict.consumer):
                    return
                if product.validator is not None and not self._valid(product, route, target):
                    return
        super()._dispatch(route, target)

    def _valid(self, product: CompiledProduct, route: CompiledRoute, target: bytes) -> bool:
        """Check the request against the product's document; hold it for its body if that is
        checked too. False when it was refused or is held."""
        assert product.validator is not None
        operation = product.validator.operation(self.head.method, self.path)
        if operation is None:
            return True
        at = target.find(b"?")
        query = target[at + 1 :].decode("latin-1") if at >= 0 else ""
        problem = operation.check_head(self.path, query, self.head.headers)
        if problem is None and operation.wants_body:
            if not (self.request_done or self.head.bodiless()):
                self.held = (operation, route, target)
                return False
            problem = operation.check_body(bytes(self.raw_body or b""))
        if problem is not None:
            self._invalid(problem)
            return False
        return True

    def _invalid(self, problem: Problem) -> None:
        body = msgspec.json.encode({"error": problem.message, "field": problem.field})
        extra = [(b"content-type", b"application/json")]
        reason = f"request does not match the API: {problem.message}"
        self.local(400, reason, API_BAD_REQUEST, body=body, extra=extra)

    def _admit_product(self, product: CompiledProduct, plan: ApiPlan, consumer: str) -> bool:
        """The plan's body limit, then the product's header changes; False when refused."""
        limit = plan.max_request_bytes
        if limit:
            head = self.head
            if head.content_length > limit or self.body_size > limit:
                self._too_large(plan)
                return False
            self.body_plan = plan
        # The upstream learns who calls (as Kong tells its consumer), never from the client.
        headers = [(n, v) for n, v in self.head.headers if n != CONSUMER_HEADER]
        headers.append((CONSUMER_HEADER, consumer.encode("latin-1")))
        if product.request_ops is not None:
            headers = product.request_ops.apply(headers)
        self.head.headers = headers
        self.response_ops = product.response_ops
        return True

    def _too_large(self, plan: ApiPlan) -> None:
        reason = (
            f"request body larger than plan {plan.name} allows ({plan.max_request_bytes} bytes)"
        )
        if self.response_started:
            self.client.abort()
            return
        self._drop_upstream()
        self.local(413, reason, API_LIMITED)

    def request_body(self, data: bytes) -> None:
        """Count the body against the plan's limit (a chunked one has no length up front), and
        keep it while a product may check it."""
        plan = self.body_plan
        if plan is not None and self.body_size + len(data) > plan.max_request_bytes:
            self.body_plan = None
            if not self.finished:
                self._too_large(plan)
            return
        gate = self.runtime.products
        if gate is not None and gate.validating and not self.finished:
            raw = self.raw_body
            if raw is None:
                raw = self.raw_body = bytearray()
            if len(raw) + len(data) > MAX_CHECKED_BODY:
                self.raw_body = None
                if self.held is not None:
                    self.held = None
                    self.local(413, "request body too large to check against the API", API_LIMITED)
                    return
            else:
                raw += data
        super().request_body(data)

    def request_end(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """A held request, whole: check its body, then send it on."""
        super().request_end(trailers)
        held = self.held
        if held is None or self.finished:
            return
        self.held = None
        operation, route, target = held
        problem = operation.check_body(bytes(self.raw_body or b""))
        if problem is not None:
            self._invalid(problem)
            return
        Exchange._dispatch(self, route, target)

    def on_response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        """The product's response header changes and the plan's RateLimit fields, then as any
        response."""
        ops = self.response_ops
        if ops is not None and status >= 200:
            headers = ops.apply(headers)
        limits = self.limits
        if limits is not None and status >= 200:
            # Appended: an upstream's own RateLimit fields stay, as further list members.
            headers = headers + limits
        super().on_response_head(status, reason, headers, keep_alive)

    def _after_lease(self, route: CompiledRoute, target: bytes) -> None:
        if not self.finished:
            self._dispatch(route, target)


def _key_of(
    product: CompiledProduct, headers: list[tuple[bytes, bytes]], target: bytes
) -> tuple[bytes | None, str]:
    """The key the request carries, or why it cannot be read."""
    key: bytes | None = None
    if product.key_header:
        for name, value in headers:
            if name == product.key_header:
                if key is not None:
                    return None, "api key header given more than once"
                key = value
    param = product.key_param
    if param:
        at = target.find(b"?")
        if at >= 0:
            wanted = param.encode("latin-1") + b"="
            for pair in target[at + 1 :].split(b"&"):
                if pair.startswith(wanted):
                    if key is not None:
                        return None, "api key given in both header and query (use one)"
                    value = pair[len(wanted) :]
                    key = unquote_to_bytes(value) if b"%" in value else value
    return key, ""


def _well_formed(key: bytes) -> bool:
    """Printable ASCII without spaces, 1 to MAX_KEY_BYTES long."""
    if not key or len(key) > MAX_KEY_BYTES:
        return False
    return all(0x21 <= byte <= 0x7E for byte in key)


def _where(product: CompiledProduct) -> str:
    places = []
    if product.key_header:
        places.append(f"header {product.key_header.decode('latin-1')}")
    if product.key_param:
        places.append(f"query parameter {product.key_param}")
    return " or ".join(places)


def _seconds(window: float) -> int:
    return max(1, round(window))


def _documents(
    products: tuple[ApiProduct, ...],
) -> dict[str, list[tuple[tuple[str, ...], bytes, bytes]]]:
    """Each product's documentation page at its path and its spec at `PATH/openapi.json`."""
    found: dict[str, list[tuple[tuple[str, ...], bytes, bytes]]] = {}
    for product in products:
        if not product.docs_path or not product.openapi:
            continue
        # Only a gateway with documented products reads the page's template.
        from gossamer.apidocs import page, template  # noqa: PLC0415

        base = product.docs_path.rstrip("/")
        html = page(product.openapi, template())
        spec = product.openapi.encode()
        for path, content_type, body in (
            (base or "/", b"text/html; charset=utf-8", html),
            (f"{base}/openapi.json", b"application/json", spec),
        ):
            found.setdefault(path, []).append((product.hosts, content_type, body))
    return found
