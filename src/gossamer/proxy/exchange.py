"""One request and its response through the proxy: Envoy's router, after the decision.

Callback driven, no task per request: the downstream connection calls `start`, `request_body`
and `request_end`; `start` hands the exchange to `dispatch` (routing, the guard, local answers),
which comes back through `forward`. Each try upstream is an `Attempt`, whose connection calls
the `on_response_*` methods; retries follow `retry_state`, the body is kept for them in a
`ReplayBuffer`, the cluster admits and counts, and the client's `codec.ResponseWriter` frames
what the client gets (HTTP/1.1 or HTTP/2: the exchange does not know which). Timers call the
`_on_*timeout` methods. Every path ends in `_finish`, exactly once.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from gossamer.proxy import local_reply as lr
from gossamer.proxy.attempt import Attempt
from gossamer.proxy.cluster import ClusterState, EndpointState, jittered_backoff
from gossamer.proxy.codec import ResponseWriter
from gossamer.proxy.dispatch import dispatch, route_request
from gossamer.proxy.forwarding import hash_key, upstream_head
from gossamer.proxy.http1 import RequestHead, body_chunk, body_end, response_fields
from gossamer.proxy.mirror import send_copies
from gossamer.proxy.replay import ReplayBuffer
from gossamer.proxy.retry_state import (
    CONNECT_FAILURE,
    PER_TRY_TIMEOUT,
    RESET,
    Failure,
    may_retry,
    repeatable,
    retriable_status,
)
from gossamer.proxy.router import CompiledRoute
from gossamer.proxy.timers import Timeout
from gossamer.proxy.tracing import TraceContext
from gossamer.proxy.upstream import ResponseSink, UpstreamConnection
from gossamer.snapshot import Mirror, RetryPolicy

if TYPE_CHECKING:
    from gossamer.proxy.codec import ClientSide


class Exchange(ResponseSink):
    """The life of one request; see the module docstring for who calls what."""

    __slots__ = (
        "admitted",
        "authority",
        "body_size",
        "client",
        "cluster",
        "cors_origin",
        "current",
        "finished",
        "flags",
        "head",
        "head_bytes",
        "is_head",
        "keep_alive",
        "last_endpoint",
        "mirrors",
        "path",
        "peer_meta",
        "policy",
        "reason",
        "replay",
        "request_done",
        "request_id",
        "response_bytes",
        "response_started",
        "retries",
        "retry",
        "retrying",
        "route",
        "runtime",
        "started",
        "status",
        "target_index",
        "timer",
        "trace",
        "upstream_identity",
        "upstream_paused",
        "writer",
    )

    def __init__(self, client: ClientSide, head: RequestHead) -> None:
        self.client = client
        self.runtime = client.runtime
        self.head = head
        self.is_head = head.method == b"HEAD"
        self.started = head.started or time.monotonic()
        self.route: CompiledRoute | None = None
        """The route matched (None until then, and for a request answered before routing)."""
        self.cluster: ClusterState | None = None
        self.admitted = False
        """The cluster counts this request among those in flight (until `_finish`)."""
        self.current: Attempt | None = None
        """The try under way upstream, if any."""
        self.last_endpoint: EndpointState | None = None
        """Where the try that ended last went (for the access log's upstream host); not the
        Attempt itself, which refers back to the exchange: a cycle only the GC would free."""
        self.peer_meta = b""
        """What the calling sidecar said of its workload (peer.py), read on inbound listeners."""
        self.target_index = 0
        self.head_bytes = b""
        self.replay = ReplayBuffer(self.runtime.limits.max_request_body_buffer)
        self.body_size = 0
        self.request_done = False
        self.response_started = False
        self.writer: ResponseWriter = client.response_writer(head, self.is_head)
        self.response_bytes = 0
        self.status = 0
        self.flags = "-"
        self.reason = ""
        self.retries = 0
        """Tries made after the first."""
        self.retry: RetryPolicy | None = None
        self.retrying = False
        self.timer: Timeout | asyncio.TimerHandle | None = None
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
        self.cors_origin = b""
        """The request's Origin, when the route's CORS policy allows it: the answer echoes it."""

    # Request side: called by the downstream connection

    def start(self) -> None:
        """Route the request and send it on, or answer it locally (see `dispatch`)."""
        route_request(self)

    def _dispatch(self, route: CompiledRoute, target: bytes) -> None:
        # The routed and guarded request; a subclass may decide more before `dispatch`.
        dispatch(self, route, target)

    def forward(self, route: CompiledRoute, target: bytes) -> None:
        """Send the request to one of the route's clusters."""
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
        cluster.admit()
        self.admitted = True
        self._attempt(None)
        # The request is on its way, or waits for a connection: what follows is off its path.
        if route.timeout and not self.finished:
            self.timer = runtime.timers.call_later(route.timeout, self._on_timeout)
        if route.mirrors:
            # Copies leave once the request is complete: now, or at request_end.
            self.mirrors = route.mirrors
            if self.request_done:
                send_copies(self, None)

    def _upstream_head(self, route: CompiledRoute, target: bytes) -> bytes:
        return upstream_head(self, route, target)

    def _sending(self) -> UpstreamConnection | None:
        # The connection the request is being sent on, if it is under way.
        current = self.current
        return current.connection if current is not None else None

    def request_body(self, data: bytes) -> None:
        """Part of the request body (decoded); forwarded in the framing the upstream expects."""
        if self.finished:
            return
        chunk = body_chunk(data, self.head.chunked)
        upstream = self._sending()
        hold = self.replay.add(chunk, upstream is not None)
        # The body's own bytes (not its chunked framing), past what the replay buffer keeps.
        self.body_size += len(data)
        if upstream is not None:
            upstream.write(chunk)
        elif hold:
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
        self.replay.end(end)
        upstream = self._sending()
        if upstream is not None:
            upstream.write(end)

    # Tries upstream

    def _attempt(self, avoid: EndpointState | None) -> None:
        cluster = self.cluster
        assert cluster is not None
        key = hash_key(self, cluster) if cluster.hashed else None
        endpoint = cluster.pick(key) if avoid is None else cluster.pick_other(avoid)
        if endpoint is None:
            self._fail(503, "no healthy upstream", lr.NO_HEALTHY_UPSTREAM)
            return
        if cluster.over_limit():
            self._fail(503, "circuit open: too many requests to the cluster", lr.UPSTREAM_OVERFLOW)
            return
        current = self.current = Attempt(self, cluster, endpoint)
        connection = current.acquire()
        if connection is not None:
            current.reused = True
            self.send(connection)

    def connect_failed(self, flag: str, reason: str) -> None:
        """The current try found no connection (its Attempt calls this)."""
        current = self.current
        endpoint = current.endpoint if current is not None else None
        self._end_try(gateway_error=True)
        if self._may_retry(CONNECT_FAILURE):
            self._schedule_retry(endpoint)
            return
        self._fail(503, reason, flag)

    def send(self, connection: UpstreamConnection) -> None:
        """The current try has its connection: send the head and whatever body is at hand."""
        current = self.current
        assert current is not None
        current.sending(connection, time.monotonic())
        self.upstream_identity = connection.endpoint.identity
        replay = self.replay
        if replay.chunks:
            connection.start(self, [self.head_bytes, *replay.chunks], self.is_head)
        else:
            connection.start(self, self.head_bytes, self.is_head)
        if replay.sent():
            # Reading paused when the body outgrew the buffer: the rest streams from here on.
            self.client.resume_reading()
        retry = self.retry
        if retry is not None and retry.per_try_timeout:
            current.arm(self.runtime.timers, retry.per_try_timeout, self._on_try_timeout)
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
            self.writer.send_continue()

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
                current = self.current
                assert self.cluster is not None and current is not None
                endpoint = current.endpoint
                self.cluster.report(endpoint, status, status in (502, 503, 504))
                self._drop_upstream()
                self._end_try(gateway_error=False, record=False)
                self._schedule_retry(endpoint)
                return
            if self.retries:
                self.flags = lr.UPSTREAM_RETRY_LIMIT
        self.status = status
        self.response_started = True
        self._downstream_head(status, reason, headers)

    def on_response_body(self, data: bytes) -> None:
        """Stream the body on, in the framing chosen for the client."""
        if not self.response_started:
            return
        self.response_bytes += len(data)
        self.writer.send_body(data)

    def on_response_tail(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """End the client's response and send it now: the bookkeeping waits for the send."""
        if not self.response_started:
            return
        self.writer.send_end(trailers)
        self.client.end_batch()

    def on_response_end(self, trailers: list[tuple[bytes, bytes]], keep_alive: bool) -> None:
        """The upstream finished and the client has its response: end the exchange."""
        if not self.response_started:
            return
        if self.writer.closes:
            self.keep_alive = False
        self._end_try(gateway_error=False)
        self._finish()

    def request_sent(self) -> bool:
        """Whether the request's body has all gone upstream (it is sent as it arrives)."""
        return self.request_done or self.head.bodiless()

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
        self._end_try(gateway_error=True)
        self.local(502, "upstream switched protocols unasked", lr.UPSTREAM_PROTOCOL_ERROR)

    def on_upstream_lost(self, reason: str) -> None:
        """The upstream connection failed before the response was complete."""
        if self.finished:
            return
        current = self.current
        endpoint = current.endpoint if current is not None else None
        if self.response_started:
            self.flags = lr.UPSTREAM_RESET
            self._end_try(gateway_error=True)
            self.keep_alive = False
            self.client.abort()
            self._finish()
            return
        stale = current is not None and current.reused and self.retries == 0
        self._end_try(gateway_error=not stale)
        if stale and self.replay.replayable() and repeatable(self.head.method, self.retry):
            # A pooled connection the upstream had closed: try once more on a fresh one. The
            # upstream may have read the request before closing, so only one safe to repeat.
            self.retries += 1
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
        upstream = self._sending()
        if upstream is not None:
            upstream.pause_reading()

    def client_resumed(self) -> None:
        """The client caught up."""
        upstream = self._sending()
        if upstream is not None:
            upstream.resume_reading()

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
        current = self.current
        if current is not None:
            current.timer = None
        if self.finished or self.response_started:
            return
        endpoint = current.endpoint if current is not None else None
        self._drop_upstream()
        self._end_try(gateway_error=True)
        if self._may_retry(PER_TRY_TIMEOUT):
            self._schedule_retry(endpoint)
            return
        self._fail(504, "upstream per-try timeout", lr.UPSTREAM_TIMEOUT)

    # Retries

    def _may_retry(self, failure: Failure | None) -> bool:
        # `failure`: how the try ended without a response; None for a response whose status
        # the policy retries. The decision is retry_state's; the budget the cluster's.
        cluster = self.cluster
        if cluster is None or not may_retry(
            self.retry,
            self.retries,
            failure,
            replayable=self.replay.replayable(),
            method=self.head.method,
        ):
            return False
        if not self.retrying and not cluster.retry_allowed():
            self.runtime.stats.incr(f'gossamer_retry_overflow_total{{cluster="{cluster.name}"}}')
            return False
        return True

    def _schedule_retry(self, avoid: EndpointState | None) -> None:
        retry = self.retry
        cluster = self.cluster
        assert retry is not None and cluster is not None
        self.retries += 1
        if not self.retrying:
            self.retrying = True
            cluster.retry_started()
        self.runtime.stats.incr(f'gossamer_upstream_retries_total{{cluster="{cluster.name}"}}')
        delay = jittered_backoff(self.retries - 1, retry.backoff_base, retry.backoff_max)
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
        if self.cors_origin:
            # As Envoy's CORS filter sees the local replies of the filters after it.
            extra = self._cors_fields(extra or [])
        self.response_started = True
        self.response_bytes = self.writer.send_local(status, reason, self.keep_alive, body, extra)
        self._finish()

    def _fail(self, status: int, reason: str, flag: str) -> None:
        self._drop_upstream()
        self.local(status, reason, flag)

    def refuse(self, status: int, reason: str) -> None:
        """The client broke its request midway: answer so, and give up any upstream attempt."""
        self._fail(status, reason, lr.DOWNSTREAM_PROTOCOL_ERROR)

    def _end_try(self, gateway_error: bool, record: bool = True) -> None:
        # The current try is over (its connection, if any, is no longer the exchange's).
        current = self.current
        if current is None:
            return
        self.current = None
        self.last_endpoint = current.endpoint
        current.end(record=record, status=self.status, gateway_error=gateway_error)

    def _drop_upstream(self) -> None:
        current = self.current
        if current is not None:
            current.detach()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.current is not None:
            self._end_try(gateway_error=False, record=False)
        cluster = self.cluster
        if cluster is not None and self.admitted:
            self.admitted = False
            cluster.request_ended(self.retrying)
        self.runtime.record(self)
        done = self.request_done or self.head.bodiless()
        self.client.exchange_done(self, self.keep_alive and done)

    def _cors_fields(self, fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        # After the route's own header changes, as Envoy's CORS filter sees the router's.
        route = self.route
        cors = route.cors if route is not None else None
        assert cors is not None
        return cors.respond(fields, self.cors_origin)

    def _downstream_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
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
            if self.cors_origin:
                out = self._cors_fields(out)
        writer.send_head(
            status, reason, out, self.keep_alive and self.request_done and not self.runtime.draining
        )
        if writer.closes:
            self.keep_alive = False
