"""One request and its response through the proxy: route, balance, retry, time out, stream.

Callback driven, no task per request: the downstream connection calls `start`, `request_body`
and `request_end`; the upstream connection calls the `on_response_*` methods; timers call the
`_on_*timeout` methods. Every path ends in `_finish`, exactly once.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote_plus

from gossamer.proxy import local_reply as lr
from gossamer.proxy.cluster import (
    ClusterState,
    EndpointState,
    jittered_backoff,
    open_connection,
)
from gossamer.proxy.guard import JWT_DENIED, Refusal, RequestGuard
from gossamer.proxy.headers import HOP_BY_HOP, TRACE_HEADER_NAMES, extra_hop_by_hop
from gossamer.proxy.http1 import (
    CHUNKED,
    RequestHead,
    ResponseWriter,
    append_fields,
    body_chunk,
    body_end,
    request_head,
    request_line,
    response_fields,
)
from gossamer.proxy.mirror import send_copies
from gossamer.proxy.mtls import MeshIdentityError
from gossamer.proxy.retry_state import (
    CONNECT_FAILURE,
    PER_TRY_TIMEOUT,
    RESET,
    Failure,
    retriable_failure,
    retriable_status,
)
from gossamer.proxy.router import CompiledRoute, RequestFacts
from gossamer.proxy.timers import Timeout
from gossamer.proxy.tracing import IncomingTrace, TraceContext, continue_trace, trace_lines
from gossamer.proxy.upstream import ResponseSink, UpstreamConnection
from gossamer.security.authz import AuthzRequest
from gossamer.snapshot import Mirror, RetryPolicy

if TYPE_CHECKING:
    from gossamer.proxy.downstream import DownstreamConnection
    from gossamer.security.jwt import JwtOutcome

# Request headers the proxy looks at on the way upstream, by what it does with them.
_HOP, _FORWARDED_FOR, _TRACE, _REQUEST_ID, _PROTO, _HOST = range(6)
_SPECIAL: dict[bytes, int] = dict.fromkeys(HOP_BY_HOP, _HOP)
_SPECIAL.update(dict.fromkeys(TRACE_HEADER_NAMES, _TRACE))
_SPECIAL.update(
    {
        b"x-forwarded-for": _FORWARDED_FOR,
        b"x-request-id": _REQUEST_ID,
        b"x-forwarded-proto": _PROTO,
        b"host": _HOST,
    }
)
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


class Exchange(ResponseSink):
    """The life of one request; see the module docstring for who calls what."""

    __slots__ = (
        "attempt",
        "authority",
        "body",
        "body_size",
        "client",
        "cluster",
        "endpoint",
        "finished",
        "flags",
        "head",
        "head_bytes",
        "is_head",
        "keep_alive",
        "mirrors",
        "path",
        "policy",
        "reason",
        "replayable",
        "request_done",
        "request_id",
        "response_bytes",
        "response_started",
        "retry",
        "retrying",
        "reused",
        "route",
        "runtime",
        "started",
        "status",
        "target_index",
        "timer",
        "trace",
        "try_started",
        "try_timer",
        "upstream",
        "upstream_identity",
        "upstream_paused",
        "writer",
    )

    def __init__(self, client: DownstreamConnection, head: RequestHead) -> None:
        self.client = client
        self.runtime = client.runtime
        self.head = head
        self.is_head = head.method == b"HEAD"
        self.started = head.started or time.monotonic()
        self.route: CompiledRoute | None = None
        self.cluster: ClusterState | None = None
        self.endpoint: EndpointState | None = None
        self.upstream: UpstreamConnection | None = None
        self.target_index = 0
        self.head_bytes = b""
        self.body: list[bytes] = []
        self.body_size = 0
        self.replayable = True
        self.request_done = False
        self.response_started = False
        self.writer = ResponseWriter(head.version, self.is_head)
        self.response_bytes = 0
        self.status = 0
        self.flags = "-"
        self.reason = ""
        self.attempt = 0
        self.retry: RetryPolicy | None = None
        self.retrying = False
        self.reused = False
        self.timer: Timeout | asyncio.TimerHandle | None = None
        self.try_timer: Timeout | None = None
        self.try_started = 0.0
        self.finished = False
        self.keep_alive = head.keep_alive
        self.upstream_paused = False
        self.authority = ""
        self.path = ""
        self.request_id = b""
        self.mirrors: tuple[Mirror, ...] = ()
        self.policy = ""
        """The AuthorizationPolicy that decided, for the access log."""
        self.upstream_identity = ""
        """The SPIFFE id the last upstream's mTLS handshake proved ("" for plaintext)."""
        self.trace: TraceContext | None = None
        """This request's span, when the listener traces (decided as the head goes upstream)."""

    # Request side: called by the downstream connection

    def start(self) -> None:
        """Route the request and send it on, or answer it locally."""
        runtime = self.runtime
        head = self.head
        target = head.target
        authority = b""
        if target[:1] != b"/":
            # Absolute form (explicit proxy mode): http://host[:port]/path
            scheme_end = target.find(b"://")
            if scheme_end > 0:
                rest = target[scheme_end + 3 :]
                slash = rest.find(b"/")
                authority, target = (rest, b"/") if slash < 0 else (rest[:slash], rest[slash:])
            elif target != b"*":
                self.local(400, "bad request target", lr.DOWNSTREAM_PROTOCOL_ERROR)
                return
        host_header = head.host
        if head.hosts > 1:
            self.local(400, "duplicate host header", lr.DOWNSTREAM_PROTOCOL_ERROR)
            return
        if not authority:
            if host_header is None and head.version == "1.1":
                self.local(400, "missing host header", lr.DOWNSTREAM_PROTOCOL_ERROR)
                return
            authority = host_header or b""
        self.authority = authority.decode("latin-1")
        query_at = target.find(b"?")
        path = target if query_at < 0 else target[:query_at]
        self.path = path.decode("latin-1")
        vhost = runtime.routes.host(self.authority)
        if vhost is None:
            self.local(404, "no route", lr.NO_ROUTE)
            return
        headers: dict[str, str] | None = None
        if vhost.by_path is not None:
            route = vhost.find_path(self.path)
        else:
            facts = RequestFacts(
                self.path, head.method.decode("latin-1"), self.authority, port=runtime.port
            )
            if vhost.needs_headers:
                headers = facts.headers = {
                    n.lower().decode("latin-1"): v.decode("latin-1") for n, v in head.headers
                }
                facts.query = _query(target, query_at)
            route = vhost.find(facts)
        if route is None:
            self.local(404, "no route", lr.NO_ROUTE)
            return
        self.route = route
        guard = runtime.guard
        if guard is not None:
            self._guarded(guard, route, target, query_at, headers)
            return
        self._dispatch(route, target)

    def _guarded(
        self,
        guard: RequestGuard,
        route: CompiledRoute,
        target: bytes,
        query_at: int,
        headers: dict[str, str] | None,
    ) -> None:
        """Let the request on only past the port's mTLS mode, its token and the policies."""
        if self.finished:
            return
        client = self.client
        port = self._destination_port(route)
        refusal = guard.check_transport(client.secure, port)
        if refusal is not None:
            self.local(refusal.status, refusal.reason, refusal.flag)
            return
        query = target[query_at + 1 :].decode("latin-1") if query_at >= 0 else ""
        outcome = guard.authenticate(self.head.headers, query)
        if outcome is not None:
            if outcome.wait is not None:
                # The issuer's keys are being fetched: check again once they are here.
                outcome.wait.add_done_callback(
                    lambda _: self._guarded(guard, route, target, query_at, headers)
                )
                return
            if outcome.status == "invalid":
                challenge = b'Bearer realm="gossamer", error="invalid_token"'
                extra = [(b"www-authenticate", challenge)]
                self.local(401, f"jwt: {outcome.error}", JWT_DENIED, extra=extra)
                return
            if outcome.remove_headers or outcome.add_headers:
                self._rewrite_auth_headers(outcome)
                headers = None
            if outcome.strip_params and query_at >= 0:
                # The token came in the query: it goes no further than the proxy.
                target = _without_params(target, query_at, outcome.strip_params)
                query_at = target.find(b"?")
        authorizer = guard.authorizer
        if authorizer.active:
            if headers is None and authorizer.needs_headers:
                headers = {
                    n.lower().decode("latin-1"): v.decode("latin-1") for n, v in self.head.headers
                }
            request = AuthzRequest(
                method=self.head.method.decode("latin-1"),
                path=self.path,
                host=self.authority,
                port=port,
                source_principal=client.principal.removeprefix("spiffe://"),
                source_ip=client.peer,
                headers=headers,
            )
            if outcome is not None and outcome.status == "ok":
                request.request_principal = outcome.principal
                request.claims = outcome.claims
            result = guard.authorize(request)
            if isinstance(result, Refusal):
                self.policy = result.policy
                self.local(result.status, result.reason, result.flag)
                return
            self.policy = result.policy
        self._dispatch(route, target)

    def _destination_port(self, route: CompiledRoute) -> int:
        """The workload's port a request is for: an inbound route's app port, else the
        listener's."""
        runtime = self.runtime
        if runtime.role == "inbound" and route.cluster_names:
            cluster = runtime.clusters.get(route.cluster_names[0])
            if cluster is not None and cluster.config.endpoints:
                return cluster.config.endpoints[0].port
        return runtime.port

    def _rewrite_auth_headers(self, outcome: JwtOutcome) -> None:
        """Drop the token's header (unless forwarded) and add the payload and claim headers."""
        removed = {name.encode("latin-1") for name in outcome.remove_headers}
        added = {name.encode("latin-1") for name, _ in outcome.add_headers}
        kept = [
            (name, value)
            for name, value in self.head.headers
            if name.lower() not in removed and name.lower() not in added
        ]
        kept.extend(
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in outcome.add_headers
        )
        self.head.headers = kept

    def _dispatch(self, route: CompiledRoute, target: bytes) -> None:
        config = route.route
        if config.direct_response is not None:
            self.flags = lr.DIRECT_RESPONSE
            direct = config.direct_response
            self.local(direct.status, "", lr.DIRECT_RESPONSE, body=direct.body.encode())
            return
        if config.redirect is not None:
            self._redirect(route, target)
            return
        fault = config.fault
        if fault is not None:
            # Independent, as in Envoy and Istio: one picked for both is delayed, then aborted.
            abort = fault.abort_status is not None and random.random() * 100 < fault.abort_percent
            if fault.delay is not None and random.random() * 100 < fault.delay_percent:
                self.flags = lr.DELAY_INJECTED
                loop = asyncio.get_running_loop()
                self.timer = loop.call_later(fault.delay, self._after_delay, route, target, abort)
                return
            if abort:
                self._abort_injected()
                return
        self._forward(route, target)

    def _after_delay(self, route: CompiledRoute, target: bytes, abort: bool) -> None:
        self.timer = None
        if self.finished:
            return
        if abort:
            self._abort_injected()
        else:
            self._forward(route, target)

    def _abort_injected(self) -> None:
        assert self.route is not None and self.route.route.fault is not None
        status = self.route.route.fault.abort_status
        assert status is not None
        self.local(status, "fault injected", lr.FAULT_INJECTED)

    def _forward(self, route: CompiledRoute, target: bytes) -> None:
        runtime = self.runtime
        index = route.pick()
        cluster = runtime.clusters.get(route.cluster_names[index])
        if cluster is None:
            self.local(503, "no cluster", lr.NO_CLUSTER)
            return
        self.target_index = index
        self.cluster = cluster
        self.retry = route.retries
        self.head_bytes = self._upstream_head(route, target)
        cluster.counters.active_requests += 1
        self._attempt(None)
        # The request is on its way, or waits for a connection: what follows is off its path.
        if route.timeout and not self.finished:
            self.timer = runtime.timers.call_later(route.timeout, self._on_timeout)
        if route.mirrors:
            # Copies leave once the request is complete: now, or at request_end.
            self.mirrors = route.mirrors
            if self.request_done:
                send_copies(self, None)

    def request_body(self, data: bytes) -> None:
        """Part of the request body (decoded); forwarded in the framing the upstream expects."""
        if self.finished:
            return
        chunk = body_chunk(data, self.head.chunked)
        if self.replayable:
            self.body.append(chunk)
            self.body_size += len(chunk)
            if self.body_size > self.runtime.limits.max_request_body_buffer:
                # Too large to replay. Once sent, nothing need be kept; until then (a request
                # queued behind others, or waiting for a connection) the body waits here.
                self.replayable = False
                if self.upstream is not None:
                    self.body.clear()
        elif self.upstream is None:
            self.body.append(chunk)
        upstream = self.upstream
        if upstream is not None and self.try_started:
            upstream.write(chunk)
        elif not self.replayable and self.body_size > self.runtime.limits.max_request_body_buffer:
            # Nowhere to send it yet and too much to hold: wait for the upstream connection.
            self.client.pause_reading()

    def request_end(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """The request is complete; a chunked body gets its last chunk and any trailers."""
        self.request_done = True
        if self.mirrors:
            send_copies(self, trailers)
        if self.finished or not self.head.chunked:
            return
        end = body_end(trailers)
        if self.replayable:
            self.body.append(end)
        upstream = self.upstream
        if upstream is not None and self.try_started:
            upstream.write(end)
        elif not self.replayable:
            self.body.append(end)

    # Choosing an endpoint and a connection

    def _attempt(self, avoid: EndpointState | None) -> None:
        cluster = self.cluster
        assert cluster is not None
        key = self._hash_key(cluster) if cluster.hashed else None
        endpoint = cluster.pick(key) if avoid is None else cluster.pick_other(avoid)
        if endpoint is None:
            self._fail(503, "no healthy upstream", lr.NO_HEALTHY_UPSTREAM)
            return
        if cluster.counters.active_requests > cluster.limits.max_requests:
            self._fail(503, "circuit open: too many requests to the cluster", lr.UPSTREAM_OVERFLOW)
            return
        self.endpoint = endpoint
        endpoint.active += 1
        self.try_started = 0.0
        connection = cluster.acquire(endpoint, self._deliver, self._connect_failed, self._connect)
        if connection is not None:
            self.reused = True
            self._send(connection)

    def _connect(self, endpoint: EndpointState) -> None:
        cluster = self.cluster
        assert cluster is not None
        loop = asyncio.get_running_loop()
        high = self.runtime.limits.max_request_body_buffer

        def factory() -> UpstreamConnection:
            return UpstreamConnection(cluster, endpoint, high)

        task = loop.create_task(
            open_connection(
                loop, factory, endpoint, cluster.limits.connect_timeout, cluster.mesh_tls
            )
        )
        task.add_done_callback(lambda done: _connected(cluster, endpoint, done))

    def _deliver(self, connection: UpstreamConnection) -> None:
        picked = self.endpoint
        if self.finished or picked is None:
            connection.cluster.release(connection)
            return
        serving = connection.endpoint
        if serving is not picked:
            # A freed connection goes to the oldest waiter whatever endpoint it picked: the
            # request's load, latency and outcome belong to the endpoint that serves it.
            picked.active -= 1
            serving.active += 1
            self.endpoint = serving
        self.reused = connection.served > 0
        self._send(connection)

    def _connect_failed(self, flag: str, reason: str) -> None:
        if self.finished:
            return
        endpoint = self.endpoint
        self._end_try(gateway_error=True)
        if self._may_retry(CONNECT_FAILURE):
            self._schedule_retry(endpoint)
            return
        status = 503
        self._fail(status, reason, flag)

    def _send(self, connection: UpstreamConnection) -> None:
        self.upstream = connection
        self.upstream_identity = connection.endpoint.identity
        self.try_started = time.monotonic()
        if self.body:
            connection.start(self, [self.head_bytes, *self.body], self.is_head)
        else:
            connection.start(self, self.head_bytes, self.is_head)
        if not self.replayable:
            # Reading paused when the body outgrew the buffer: the rest streams from here on.
            self.body.clear()
            self.client.resume_reading()
        retry = self.retry
        if retry is not None and retry.per_try_timeout:
            self.try_timer = self.runtime.timers.call_later(
                retry.per_try_timeout, self._on_try_timeout
            )
        if self.client.write_paused:
            # The client's pause came before this connection: no new pause event will come.
            connection.pause_reading()
        if self.head.expect_continue:
            self._continue()

    def _continue(self) -> None:
        # As Envoy does: the client hears 100 once its request is on the way upstream, so it
        # never waits on an upstream that sends none; the upstream's own 100 is not passed on.
        self.head.expect_continue = False
        if not self.request_done:
            interim = self.writer.interim_continue()
            if interim:
                self.client.write(interim)

    # Response side: called by the upstream connection

    def on_response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        """Retry on a retriable status, or pass the head to the client."""
        if status < 200:
            return
        retry = self.retry
        if retry is not None and retriable_status(status, retry):
            if self._may_retry(None):
                endpoint = self.endpoint
                assert self.cluster is not None and endpoint is not None
                self.cluster.report(endpoint, status, status in (502, 503, 504))
                self._drop_upstream()
                self._end_try(gateway_error=False, record=False)
                self._schedule_retry(endpoint)
                return
            if self.attempt:
                self.flags = lr.UPSTREAM_RETRY_LIMIT
        self.status = status
        self.response_started = True
        self.client.write(self._downstream_head(status, reason, headers))

    def on_response_body(self, data: bytes) -> None:
        """Stream the body on, in the framing chosen for the client."""
        if not self.response_started:
            return
        self.response_bytes += len(data)
        self.client.write(self.writer.body(data))

    def on_response_tail(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """End the client's response and send it now: the bookkeeping waits for the send."""
        if not self.response_started:
            return
        if self.writer.chunked():
            self.client.write(self.writer.end(trailers))
        self.client.end_batch()

    def on_response_end(self, trailers: list[tuple[bytes, bytes]], keep_alive: bool) -> None:
        """The upstream finished and the client has its response: end the exchange."""
        if not self.response_started:
            return
        if self.writer.closes:
            self.keep_alive = False
        self.upstream = None
        self._end_try(gateway_error=False)
        self._finish()

    def begin_batch(self) -> bool:
        """Hold the client's writes while a chunk of response is parsed."""
        return self.client.begin_batch()

    def end_batch(self) -> None:
        """Send the client what the batch held."""
        self.client.end_batch()

    def on_switched(self, connection: UpstreamConnection, rest: bytes) -> None:
        """The upstream answered 101 to a request that asked for no upgrade: a 502."""
        del rest
        connection.close()
        self.upstream = None
        self._end_try(gateway_error=True)
        self.local(502, "upstream switched protocols unasked", lr.UPSTREAM_PROTOCOL_ERROR)

    def on_upstream_lost(self, reason: str) -> None:
        """The upstream connection failed before the response was complete."""
        if self.finished:
            return
        self.upstream = None
        endpoint = self.endpoint
        if self.response_started:
            self.flags = lr.UPSTREAM_RESET
            self._end_try(gateway_error=True)
            self.keep_alive = False
            self.client.abort()
            self._finish()
            return
        stale = self.reused and self.attempt == 0
        self._end_try(gateway_error=not stale)
        if stale and self.replayable and self._repeatable():
            # A pooled connection the upstream had closed: try once more on a fresh one. The
            # upstream may have read the request before closing, so only one safe to repeat.
            self.attempt += 1
            self._attempt(None)
            return
        if self._may_retry(RESET):
            self._schedule_retry(endpoint)
            return
        self._fail(503, reason, lr.UPSTREAM_RESET)

    def on_upstream_pause(self) -> None:
        """The upstream is slow to take the request body: stop reading the client."""
        self.upstream_paused = True
        self.client.pause_reading()

    def on_upstream_resume(self) -> None:
        """The upstream caught up."""
        if self.upstream_paused:
            self.upstream_paused = False
            self.client.resume_reading()

    def client_paused(self) -> None:
        """The client is slow to read the response: stop reading the upstream."""
        if self.upstream is not None:
            self.upstream.pause_reading()

    def client_resumed(self) -> None:
        """The client caught up."""
        if self.upstream is not None:
            self.upstream.resume_reading()

    def client_lost(self) -> None:
        """The client went away: give up the upstream request."""
        if self.finished:
            return
        self.flags = lr.DOWNSTREAM_CONNECTION_TERMINATION
        self._drop_upstream()
        self._end_try(gateway_error=False, record=False)
        self.keep_alive = False
        self.status = self.status or 499
        self._finish()

    # Timers

    def _on_timeout(self) -> None:
        self.timer = None
        if self.finished:
            return
        self._drop_upstream()
        self._end_try(gateway_error=True)
        if self.response_started:
            self.flags = lr.UPSTREAM_TIMEOUT
            self.keep_alive = False
            self.client.abort()
            self._finish()
            return
        self._fail(504, "upstream timeout", lr.UPSTREAM_TIMEOUT)

    def _on_try_timeout(self) -> None:
        self.try_timer = None
        if self.finished or self.response_started:
            return
        endpoint = self.endpoint
        self._drop_upstream()
        self._end_try(gateway_error=True)
        if self._may_retry(PER_TRY_TIMEOUT):
            self._schedule_retry(endpoint)
            return
        self._fail(504, "upstream per-try timeout", lr.UPSTREAM_TIMEOUT)

    # Retries

    def _may_retry(self, failure: Failure | None) -> bool:
        # `failure`: how the try ended without a response; None for a response whose status
        # the policy retries.
        retry = self.retry
        cluster = self.cluster
        if retry is None or cluster is None or self.attempt >= retry.attempts:
            return False
        if failure is not None and not retriable_failure(failure, retry):
            return False
        if not self.replayable:
            return False
        sent = failure != CONNECT_FAILURE
        if sent and self.head.method not in IDEMPOTENT and not retry.retry_non_idempotent:
            return False
        if not self.retrying and not cluster.retry_allowed():
            self.runtime.stats.incr(f'gossamer_retry_overflow_total{{cluster="{cluster.name}"}}')
            return False
        return True

    def _repeatable(self) -> bool:
        retry = self.retry
        return self.head.method in IDEMPOTENT or (retry is not None and retry.retry_non_idempotent)

    def _schedule_retry(self, avoid: EndpointState | None) -> None:
        retry = self.retry
        cluster = self.cluster
        assert retry is not None and cluster is not None
        self.attempt += 1
        if not self.retrying:
            # Outstanding until the request ends, as in Envoy: a retry in flight is load too.
            self.retrying = True
            cluster.counters.active_retries += 1
        self.runtime.stats.incr(f'gossamer_upstream_retries_total{{cluster="{cluster.name}"}}')
        delay = jittered_backoff(self.attempt - 1, retry.backoff_base, retry.backoff_max)
        loop = asyncio.get_running_loop()
        loop.call_later(delay, self._retry_now, avoid)

    def _retry_now(self, avoid: EndpointState | None) -> None:
        if not self.finished:
            self._attempt(avoid)

    # Endings

    def local(
        self,
        status: int,
        reason: str,
        flag: str,
        *,
        body: bytes | None = None,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Answer the client from the proxy and end the exchange."""
        if self.finished:
            return
        self.flags = flag
        self.reason = reason
        self.status = status
        if flag == lr.DOWNSTREAM_PROTOCOL_ERROR or not (self.request_done or self.head.bodiless()):
            # A body not read yet leaves the connection unable to carry another request.
            self.keep_alive = False
        data = self.writer.local(status, reason, self.keep_alive, body, extra)
        self.response_bytes = len(data)
        self.response_started = True
        self.client.write(data)
        self._finish()

    def _fail(self, status: int, reason: str, flag: str) -> None:
        self._drop_upstream()
        self.local(status, reason, flag)

    def refuse(self, status: int, reason: str) -> None:
        """The client broke its request midway: answer so, and give up any upstream attempt."""
        self._fail(status, reason, lr.DOWNSTREAM_PROTOCOL_ERROR)

    def _redirect(self, route: CompiledRoute, target: bytes) -> None:
        redirect = route.route.redirect
        assert redirect is not None
        scheme = redirect.scheme or "http"
        authority = redirect.authority or self.authority
        if redirect.port is not None:
            authority = f"{authority.rsplit(':', 1)[0]}:{redirect.port}"
        path = redirect.path or target.decode("latin-1")
        location = f"{scheme}://{authority}{path}".encode("latin-1")
        self.local(redirect.status, "", "-", body=b"", extra=[(b"location", location)])

    def _end_try(self, gateway_error: bool, record: bool = True) -> None:
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        endpoint = self.endpoint
        if endpoint is None:
            return
        endpoint.active -= 1
        self.endpoint = None
        cluster = self.cluster
        if cluster is None:
            return
        if record:
            if self.try_started and cluster.peak_ewma:
                now = time.monotonic()
                endpoint.observe_latency(now - self.try_started, now)
            if cluster.outlier_detection is not None:
                cluster.report(endpoint, self.status if not gateway_error else 503, gateway_error)

    def _drop_upstream(self) -> None:
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.detach()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.endpoint is not None:
            self._end_try(gateway_error=False, record=False)
        if self.cluster is not None and self.route is not None and self.head_bytes:
            self.cluster.counters.active_requests -= 1
            if self.retrying:
                self.cluster.counters.active_retries -= 1
        self.runtime.record(self)
        done = self.request_done or self.head.bodiless()
        self.client.exchange_done(self, self.keep_alive and done)

    # Building heads

    def _upstream_head(self, route: CompiledRoute, target: bytes) -> bytes:
        head = self.head
        runtime = self.runtime
        headers, forwarded_for, request_id, dropped, has_proto, has_host, incoming = _scan(
            head.headers
        )
        trace = self.trace = runtime.tracer.begin(incoming) if runtime.tracer else None
        peer = self.client.peer_bytes
        forwarded = forwarded_for + b", " + peer if forwarded_for else peer
        new_id = request_id is None
        if request_id is None:
            request_id = runtime.next_request_id()
        self.request_id = request_id
        rewrite = route.rewrite
        if rewrite is not None:
            target = self.runtime.rewrite(route, rewrite, target, self.path)
        if route.plain_request and dropped is None:
            # The usual case: the client's headers as they are, then the proxy's, in one pass.
            lines = request_line(head.method, target)
            append_fields(lines, headers)
            lines += (b"x-forwarded-for: ", forwarded, b"\r\n")
            if not has_proto:
                lines.append(runtime.proto_line)
            if new_id:
                lines += (b"x-request-id: ", request_id, b"\r\n")
            lines.append(trace_lines(incoming) if trace is None else trace.lines())
            if head.chunked:
                lines.append(b"transfer-encoding: chunked\r\n")
            if not has_host and self.authority:
                lines += (b"host: ", self.authority.encode("latin-1"), b"\r\n")
            lines.append(b"\r\n")
            return b"".join(lines)
        if dropped is not None:
            headers = [(n, v) for n, v in headers if n not in dropped]
        headers.append((b"x-forwarded-for", forwarded))
        if not has_proto:
            headers.append((b"x-forwarded-proto", runtime.scheme))
        if new_id:
            headers.append((b"x-request-id", request_id))
        headers.extend((trace or continue_trace(incoming, 100.0)).headers())
        if head.chunked:
            headers.append(CHUNKED)
        if rewrite is not None and rewrite.authority:
            headers = [(n, v) for n, v in headers if n != b"host"]
            headers.append((b"host", rewrite.authority.encode("latin-1")))
        elif not has_host and self.authority:
            headers.append((b"host", self.authority.encode("latin-1")))
        if route.request_ops is not None:
            headers = route.request_ops.apply(headers)
        target_ops = route.target_request_ops[self.target_index]
        if target_ops is not None:
            headers = target_ops.apply(headers)
        return request_head(head.method, target, headers)

    def _downstream_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> bytes:
        writer = self.writer
        out, length_known = response_fields(headers)
        framing = writer.framing_for(status, length_known)
        if framing is not None:
            out.append(framing)
        route = self.route
        if route is not None and not route.plain_response:
            if route.response_ops is not None:
                out = route.response_ops.apply(out)
            target_ops = route.target_response_ops[self.target_index]
            if target_ops is not None:
                out = target_ops.apply(out)
        data = writer.head(
            status, reason, out, self.keep_alive and self.request_done and not self.runtime.draining
        )
        if writer.closes:
            self.keep_alive = False
        return data

    def _hash_key(self, cluster: ClusterState) -> bytes | None:
        policy = cluster.config.hash_policy
        assert policy is not None
        if policy.source_ip:
            return self.client.peer_bytes
        wanted = (policy.header or "").lower().encode()
        cookie = (policy.cookie or "").encode()
        for name, value in self.head.headers:
            lower = name.lower()
            if wanted and lower == wanted:
                return value
            if cookie and lower == b"cookie":
                for part in value.split(b";"):
                    key, _, found = part.strip().partition(b"=")
                    if key == cookie:
                        return found
        if policy.query_param:
            query = _query(self.head.target, self.head.target.find(b"?"))
            if query and policy.query_param in query:
                return query[policy.query_param].encode()
        return None


def _scan(
    pairs: list[tuple[bytes, bytes]],
) -> tuple[
    list[tuple[bytes, bytes]],
    bytes | None,
    bytes | None,
    set[bytes] | None,
    bool,
    bool,
    IncomingTrace | None,
]:
    """One pass over the request headers: what to forward, and what the proxy must know."""
    special = _SPECIAL
    headers: list[tuple[bytes, bytes]] = []
    forwarded_for = request_id = None
    incoming: IncomingTrace | None = None
    has_proto = has_host = False
    dropped: set[bytes] | None = None
    for pair in pairs:
        lower, value = pair  # names come in lower case
        kind = special.get(lower)
        if kind is None:
            headers.append(pair)
        elif kind == _HOP:
            if lower == b"connection":
                extra = extra_hop_by_hop(value)
                if extra is not None:
                    dropped = extra if dropped is None else dropped | extra
            elif lower == b"te" and b"trailers" in value.lower():
                headers.append((b"te", b"trailers"))
        elif kind == _FORWARDED_FOR:
            forwarded_for = value
        elif kind == _TRACE:
            if incoming is None:
                incoming = IncomingTrace()
            incoming.take(lower, value)
        else:
            if kind == _REQUEST_ID:
                request_id = value
            elif kind == _PROTO:
                has_proto = True
            else:
                has_host = True
            headers.append(pair)
    return headers, forwarded_for, request_id, dropped, has_proto, has_host, incoming


def _connected(
    cluster: ClusterState, endpoint: EndpointState, done: asyncio.Task[UpstreamConnection]
) -> None:
    if done.cancelled():
        cluster.connect_failed(endpoint, lr.UPSTREAM_CONNECT_FAILURE, "upstream connect cancelled")
        return
    error = done.exception()
    if error is None:
        cluster.connected(done.result())
    elif isinstance(error, TimeoutError):
        cluster.connect_failed(endpoint, lr.UPSTREAM_CONNECT_FAILURE, "upstream connect timeout")
    elif isinstance(error, ConnectionRefusedError):
        cluster.connect_failed(endpoint, lr.UPSTREAM_CONNECT_FAILURE, "upstream connect refused")
    elif isinstance(error, MeshIdentityError):
        cluster.connect_failed(endpoint, lr.UPSTREAM_CONNECT_FAILURE, f"upstream mTLS: {error}")
    elif isinstance(error, ssl.SSLError):
        reason = f"upstream mTLS handshake failed: {error.reason or error}"
        cluster.connect_failed(endpoint, lr.UPSTREAM_CONNECT_FAILURE, reason)
    else:
        reason = f"upstream connect error: {error.__class__.__name__}"
        cluster.connect_failed(endpoint, lr.UPSTREAM_CONNECT_FAILURE, reason)


def _without_params(target: bytes, at: int, names: tuple[str, ...]) -> bytes:
    """The request target without the named query parameters (the others kept as sent)."""
    dropped = set(names)
    kept = [
        pair
        for pair in target[at + 1 :].split(b"&")
        if unquote_plus(pair.split(b"=", 1)[0].decode("latin-1")) not in dropped
    ]
    rest = b"&".join([pair for pair in kept if pair])
    return target[:at] + (b"?" + rest if rest else b"")


def _query(target: bytes, at: int) -> dict[str, str]:
    if at < 0:
        return {}
    return dict(parse_qsl(target[at + 1 :].decode("latin-1"), keep_blank_values=True))
