"""What a request becomes on its way upstream: the headers the proxy drops, adds and edits.

Protocol-neutral decisions (x-forwarded-for, x-request-id, the trace context, the route's
header operations, the key a hashing balancer uses); `http1` puts the result on the wire.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote_plus

from gossamer.proxy.headers import HOP_BY_HOP, TRACE_HEADER_NAMES, extra_hop_by_hop
from gossamer.proxy.http1 import CHUNKED, append_fields, request_head, request_line
from gossamer.proxy.peer import HEADER as PEER_HEADER
from gossamer.proxy.tracing import IncomingTrace, upstream_trace_headers, upstream_trace_lines

if TYPE_CHECKING:
    from gossamer.proxy.cluster import ClusterState
    from gossamer.proxy.exchange import Exchange
    from gossamer.proxy.router import CompiledRoute

# Request headers the proxy looks at on the way upstream, by what it does with them.
_HOP, _FORWARDED_FOR, _TRACE, _REQUEST_ID, _PROTO, _HOST, _PEER = range(7)
_SPECIAL: dict[bytes, int] = dict.fromkeys(HOP_BY_HOP, _HOP)
_SPECIAL.update(dict.fromkeys(TRACE_HEADER_NAMES, _TRACE))
_SPECIAL.update(
    {
        PEER_HEADER: _PEER,
        b"x-forwarded-for": _FORWARDED_FOR,
        b"x-request-id": _REQUEST_ID,
        b"x-forwarded-proto": _PROTO,
        b"host": _HOST,
    }
)


def upstream_head(exchange: Exchange, route: CompiledRoute, target: bytes) -> bytes:
    """The request head for the upstream: the client's headers without hop-by-hop ones, and
    the proxy's own (x-forwarded-for, x-forwarded-proto, x-request-id, trace context, Host),
    edited as the route says."""
    head = exchange.head
    runtime = exchange.runtime
    headers, forwarded_for, request_id, dropped, has_proto, has_host, incoming, meta = scan(
        head.headers
    )
    exchange.peer_meta = meta
    cluster = exchange.cluster
    # Who is calling, for a sidecar of the mesh at the other end (peer.py).
    peer_line = runtime.peer_line if cluster is not None and cluster.in_mesh else b""
    trace = exchange.trace = runtime.tracer.begin(incoming) if runtime.tracer else None
    peer = exchange.client.peer_bytes
    forwarded = forwarded_for + b", " + peer if forwarded_for else peer
    new_id = request_id is None
    if request_id is None:
        request_id = runtime.next_request_id()
    exchange.request_id = request_id
    rewrite = route.rewrite
    if rewrite is not None:
        target = runtime.rewrite(route, rewrite, target, exchange.path)
    if route.plain_request and dropped is None:
        # The usual case: the client's headers as they are, then the proxy's, in one pass.
        lines = request_line(head.method, target)
        append_fields(lines, headers)
        lines += (b"x-forwarded-for: ", forwarded, b"\r\n")
        if not has_proto:
            lines.append(runtime.proto_line)
        if new_id:
            lines += (b"x-request-id: ", request_id, b"\r\n")
        lines.append(upstream_trace_lines(trace, incoming))
        if peer_line:
            lines.append(peer_line)
        if head.chunked:
            lines.append(b"transfer-encoding: chunked\r\n")
        if not has_host and exchange.authority:
            lines += (b"host: ", exchange.authority.encode("latin-1"), b"\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)
    own: list[tuple[bytes, bytes]] = [(b"x-forwarded-for", forwarded)]
    if not has_proto:
        own.append((b"x-forwarded-proto", runtime.scheme))
    if new_id:
        own.append((b"x-request-id", request_id))
    own.extend(upstream_trace_headers(trace, incoming))
    if peer_line:
        own.append(runtime.peer_field)
    kept = headers if dropped is None else [(n, v) for n, v in headers if n not in dropped]
    return _edited_head(exchange, route, target, kept + own, has_host)


def _edited_head(
    exchange: Exchange,
    route: CompiledRoute,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    has_host: bool,
) -> bytes:
    # The client's headers and the proxy's, then Host and the route's header operations.
    head = exchange.head
    if head.chunked:
        headers.append(CHUNKED)
    rewrite = route.rewrite
    if rewrite is not None and rewrite.authority:
        headers = [(n, v) for n, v in headers if n != b"host"]
        headers.append((b"host", rewrite.authority.encode("latin-1")))
    elif not has_host and exchange.authority:
        headers.append((b"host", exchange.authority.encode("latin-1")))
    if route.request_ops is not None:
        headers = route.request_ops.apply(headers)
    target_ops = route.target_request_ops[exchange.target_index]
    if target_ops is not None:
        headers = target_ops.apply(headers)
    return request_head(head.method, target, headers)


def hash_key(exchange: Exchange, cluster: ClusterState) -> bytes | None:
    """What a RING_HASH cluster hashes for this request (None: pick at random)."""
    policy = cluster.config.hash_policy
    assert policy is not None
    if policy.source_ip:
        return exchange.client.peer_bytes
    wanted = (policy.header or "").lower().encode()
    cookie = (policy.cookie or "").encode()
    for name, value in exchange.head.headers:
        lower = name.lower()
        if wanted and lower == wanted:
            return value
        if cookie and lower == b"cookie":
            for part in value.split(b";"):
                key, _, found = part.strip().partition(b"=")
                if key == cookie:
                    return found
    if policy.query_param:
        params = query(exchange.head.target, exchange.head.target.find(b"?"))
        if params and policy.query_param in params:
            return params[policy.query_param].encode()
    return None


def scan(
    pairs: list[tuple[bytes, bytes]],
) -> tuple[
    list[tuple[bytes, bytes]],
    bytes | None,
    bytes | None,
    set[bytes] | None,
    bool,
    bool,
    IncomingTrace | None,
    bytes,
]:
    """One pass over the request headers: what to forward, and what the proxy must know (the
    peer metadata a calling sidecar sent is never forwarded)."""
    special = _SPECIAL
    headers: list[tuple[bytes, bytes]] = []
    forwarded_for = request_id = None
    incoming: IncomingTrace | None = None
    has_proto = has_host = False
    dropped: set[bytes] | None = None
    meta = b""
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
        elif kind == _PEER:
            meta = value
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
    return headers, forwarded_for, request_id, dropped, has_proto, has_host, incoming, meta


def without_params(target: bytes, at: int, names: tuple[str, ...]) -> bytes:
    """The request target without the named query parameters (the others kept as sent)."""
    dropped = set(names)
    kept = [
        pair
        for pair in target[at + 1 :].split(b"&")
        if unquote_plus(pair.split(b"=", 1)[0].decode("latin-1")) not in dropped
    ]
    rest = b"&".join([pair for pair in kept if pair])
    return target[:at] + (b"?" + rest if rest else b"")


def query(target: bytes, at: int) -> dict[str, str]:
    """The query parameters of a target whose "?" is at `at` (-1: none)."""
    if at < 0:
        return {}
    return dict(parse_qsl(target[at + 1 :].decode("latin-1"), keep_blank_values=True))
