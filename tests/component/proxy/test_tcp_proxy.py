"""Opaque TCP through real proxies: bytes both ways, server-speaks-first, connect failures,
mTLS between two proxies, AuthorizationPolicy on connections and Istio's TCP metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import msgspec
import pytest

from gossamer.proxy import AdminServer, Proxy
from gossamer.proxy.tcp_proxy import HALF_CLOSED_IDLE
from gossamer.security.ca import CertificateAuthority
from gossamer.security.identity import WorkloadIdentity
from gossamer.security.spiffe import spiffe_id
from gossamer.snapshot import (
    AuthzOperation,
    AuthzPolicy,
    AuthzRule,
    AuthzSource,
    Cluster,
    Endpoint,
    InboundMtls,
    Listener,
    ListenerLimits,
    Node,
    PoolLimits,
    Security,
    ServiceLabels,
    Snapshot,
    TcpRoute,
    Telemetry,
    WeightedCluster,
)

from .waiting import eventually

FRONTEND = spiffe_id("cluster.local", "default", "frontend")
REDIS = spiffe_id("cluster.local", "data", "redis")
SERVICE = "outbound|6379||redis.data.svc.cluster.local"
BANNER = b"220 ready\r\n"


class Upstream:
    """A real TCP server: echoes each chunk back with a prefix, or greets first when `banner`."""

    def __init__(self, banner: bytes = b"") -> None:
        self.banner = banner
        self.server: asyncio.Server | None = None
        self.connections = 0
        self.eofs = 0

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.banner:
            writer.write(self.banner)
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(b"echo:" + data)
                await writer.drain()
            self.eofs += 1
            # After the client's half-close, the answer still goes back.
            writer.write(b"bye")
            await writer.drain()
        writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def free_port() -> int:
    """A port nothing listens on (bound and released)."""
    import socket  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tcp_listener(
    name: str,
    cluster: str,
    *,
    role: str = "outbound",
    mtls: InboundMtls | None = None,
    destination_port: int = 0,
) -> Listener:
    return Listener(
        name,
        "127.0.0.1",
        0,
        role,  # type: ignore[arg-type]
        "",
        mtls=mtls,
        tcp=TcpRoute(
            clusters=(WeightedCluster(cluster=cluster),), destination_port=destination_port
        ),
    )


def vip_snapshot(endpoints: tuple[Endpoint, ...], roots: tuple[str, ...] = ()) -> Snapshot:
    """A VIP-proxy-like snapshot: one opaque listener to the redis service's cluster."""
    cluster = Cluster(
        name=SERVICE,
        endpoints=endpoints,
        lb_policy="ROUND_ROBIN",
        labels=ServiceLabels(
            service="redis.data.svc.cluster.local",
            service_name="redis",
            namespace="data",
            workload="redis",
        ),
    )
    return Snapshot(
        version="1",
        node=Node(workload="frontend", service_account="frontend", service="frontend"),
        listeners=(tcp_listener("vip|tcp", SERVICE),),
        clusters=(cluster,),
        security=Security(roots=roots),
    )


def sidecar_snapshot(
    app_port: int,
    roots: tuple[str, ...],
    mode: str = "STRICT",
    policies: tuple[AuthzPolicy, ...] = (),
) -> Snapshot:
    """The destination's sidecar: an inbound opaque listener to its app."""
    app = Cluster(name="inbound|6379||", endpoints=(Endpoint(address="127.0.0.1", port=app_port),))
    return Snapshot(
        version="1",
        node=Node(workload="redis", namespace="data", service_account="redis", service="redis"),
        listeners=(
            tcp_listener(
                "inbound|tcp|6379",
                app.name,
                role="inbound",
                mtls=InboundMtls(mode=mode),  # type: ignore[arg-type]
                destination_port=6379,
            ),
        ),
        clusters=(app,),
        security=Security(roots=roots, authorization=policies),
    )


Start = Callable[..., Awaitable[Proxy]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    proxies: list[Proxy] = []

    async def run(snapshot: Snapshot, identity: tuple[str, str, str] | None = None) -> Proxy:
        proxy = Proxy()
        proxies.append(proxy)
        if identity is not None:
            proxy.set_identity(*identity)
        await proxy.apply(snapshot)
        return proxy

    yield run
    for proxy in proxies:
        await proxy.close()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = await Upstream().start()
    yield server
    server.close()


def issue(ca: CertificateAuthority, spiffe: str, folder: Path) -> tuple[str, str, str]:
    identity = WorkloadIdentity.create(spiffe)
    namespace, account = spiffe.split("/ns/")[1].split("/sa/")
    identity.accept(ca.sign(identity.csr(), namespace=namespace, service_account=account))
    cert, key = identity.write(folder)
    return str(cert), str(key), spiffe


async def exchange(port: int, message: bytes, expect: int = 0) -> bytes:
    """Send `message` and read the answer: `expect` bytes, or (with 0) half-close and read
    until the other side closes. b"" when the proxy closes the connection first."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(message)
        await writer.drain()
        if not expect:
            writer.write_eof()
            return await asyncio.wait_for(reader.read(), 5.0)
        answer = b""
        while len(answer) < expect:
            chunk = await asyncio.wait_for(reader.read(expect - len(answer)), 5.0)
            if not chunk:
                break
            answer += chunk
        return answer
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


def counter(proxy: Proxy, name: str, *needles: str) -> int:
    """The sum of a counter's series whose labels hold every needle."""
    return sum(
        value
        for key, value in proxy.stats.counters.items()
        if key.startswith(name + "{") and all(needle in key for needle in needles)
    )


async def test_bytes_go_both_ways_and_a_half_close_is_passed_on(
    start: Start, upstream: Upstream
) -> None:
    proxy = await start(vip_snapshot((Endpoint("127.0.0.1", upstream.port),)))
    answer = await exchange(proxy.tcp.port("vip|tcp"), b"PING")
    assert answer == b"echo:PINGbye"
    assert upstream.eofs == 1
    await eventually(lambda: counter(proxy, "istio_tcp_connections_closed_total") == 1)
    labels = ('reporter="source"', 'destination_service_name="redis"', 'request_protocol="tcp"')
    assert counter(proxy, "istio_tcp_connections_opened_total", *labels) == 1
    assert counter(proxy, "istio_tcp_received_bytes_total", *labels) == len(b"PING")
    assert counter(proxy, "istio_tcp_sent_bytes_total", *labels) == len(b"echo:PINGbye")
    assert "istio_tcp_sent_bytes_total{" in proxy.stats.prometheus()


async def test_the_server_speaks_first_without_a_byte_from_the_client(start: Start) -> None:
    greeter = await Upstream(banner=BANNER).start()
    try:
        proxy = await start(vip_snapshot((Endpoint("127.0.0.1", greeter.port),)))
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.tcp.port("vip|tcp"))
        try:
            assert await asyncio.wait_for(reader.readexactly(len(BANNER)), 5.0) == BANNER
        finally:
            writer.close()
    finally:
        greeter.close()


async def test_a_refused_endpoint_is_skipped_before_any_byte_is_sent(
    start: Start, upstream: Upstream
) -> None:
    dead = Endpoint("127.0.0.1", free_port())
    proxy = await start(vip_snapshot((dead, Endpoint("127.0.0.1", upstream.port))))
    port = proxy.tcp.port("vip|tcp")
    for _ in range(4):
        assert await exchange(port, b"x") == b"echo:xbye"
    assert upstream.connections == 4
    assert counter(proxy, "gossamer_upstream_connect_failures_total") >= 1


async def test_no_reachable_endpoint_closes_the_client_and_counts_why(start: Start) -> None:
    proxy = await start(vip_snapshot((Endpoint("127.0.0.1", free_port()),)))
    assert await exchange(proxy.tcp.port("vip|tcp"), b"x") == b""
    await eventually(
        lambda: counter(proxy, "istio_tcp_connections_closed_total", 'response_flags="UF"') == 1
    )
    empty = await start(
        Snapshot(
            version="1",
            listeners=(tcp_listener("vip|none", "nothing"),),
            clusters=(Cluster(name="nothing"),),
        )
    )
    assert await exchange(empty.tcp.port("vip|none"), b"x") == b""


async def mesh(
    ca: CertificateAuthority,
    tmp_path: Path,
    start: Start,
    app_port: int,
    *,
    mode: str = "STRICT",
    policies: tuple[AuthzPolicy, ...] = (),
) -> tuple[Proxy, Proxy]:
    """A destination sidecar in front of `app_port`, and a source proxy that calls it."""
    sidecar = await start(
        sidecar_snapshot(app_port, ca.roots, mode, policies), issue(ca, REDIS, tmp_path / "r")
    )
    identity = REDIS if mode != "DISABLE" else ""
    endpoint = Endpoint("127.0.0.1", sidecar.tcp.port("inbound|tcp|6379"), identity=identity)
    source = await start(vip_snapshot((endpoint,), ca.roots), issue(ca, FRONTEND, tmp_path / "f"))
    return sidecar, source


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "ca")


async def test_between_proxies_with_mtls_and_plaintext_refused_when_strict(
    ca: CertificateAuthority, tmp_path: Path, start: Start, upstream: Upstream
) -> None:
    sidecar, source = await mesh(ca, tmp_path, start, upstream.port)
    assert await exchange(source.tcp.port("vip|tcp"), b"SET k v", 12) == b"echo:SET k v"
    # Straight to the sidecar in plaintext: closed before the app sees anything.
    assert await exchange(sidecar.tcp.port("inbound|tcp|6379"), b"x") == b""
    assert upstream.connections == 1
    await eventually(
        lambda: counter(sidecar, "istio_tcp_connections_closed_total") == 1,
        timeout=HALF_CLOSED_IDLE + 10,
        what="closed once the client's end met the TLS hop's silence",
    )
    at_destination = (
        'reporter="destination"',
        f'source_principal="{FRONTEND}"',
        'source_workload_namespace="default"',
        'connection_security_policy="mutual_tls"',
        'destination_workload="redis"',
    )
    assert counter(sidecar, "istio_tcp_connections_opened_total", *at_destination) == 1
    at_source = ('reporter="source"', f'destination_principal="{REDIS}"', "mutual_tls")
    assert counter(source, "istio_tcp_connections_opened_total", *at_source) == 1
    assert sidecar.stats.counters["gossamer_mtls_plaintext_refused_total"] == 1


async def test_plaintext_between_proxies_when_disabled(
    ca: CertificateAuthority, tmp_path: Path, start: Start, upstream: Upstream
) -> None:
    _, source = await mesh(ca, tmp_path, start, upstream.port, mode="DISABLE")
    assert await exchange(source.tcp.port("vip|tcp"), b"GET k", 10) == b"echo:GET k"
    assert counter(source, "istio_tcp_connections_opened_total", 'security_policy="none"') == 1


async def test_a_deny_for_the_callers_namespace_closes_the_connection(
    ca: CertificateAuthority, tmp_path: Path, start: Start, upstream: Upstream
) -> None:
    deny = AuthzPolicy(
        name="data/deny-default",
        action="DENY",
        rules=(AuthzRule(sources=(AuthzSource(namespaces=("default",)),)),),
    )
    sidecar, source = await mesh(ca, tmp_path, start, upstream.port, policies=(deny,))
    assert await exchange(source.tcp.port("vip|tcp"), b"GET k", 10) == b""
    assert upstream.connections == 0
    assert counter(sidecar, "gossamer_tcp_denied_total") == 1


async def test_an_allow_rule_with_http_fields_matches_no_connection(
    ca: CertificateAuthority, tmp_path: Path, start: Start, upstream: Upstream
) -> None:
    by_method = AuthzPolicy(
        name="data/allow-get",
        action="ALLOW",
        rules=(AuthzRule(operations=(AuthzOperation(methods=("GET",)),)),),
    )
    by_port = AuthzPolicy(
        name="data/allow-6379",
        action="ALLOW",
        rules=(AuthzRule(operations=(AuthzOperation(ports=("6379",)),)),),
    )
    _, denied = await mesh(ca, tmp_path / "a", start, upstream.port, policies=(by_method,))
    assert await exchange(denied.tcp.port("vip|tcp"), b"x", 6) == b""
    _, allowed = await mesh(ca, tmp_path / "b", start, upstream.port, policies=(by_method, by_port))
    assert await exchange(allowed.tcp.port("vip|tcp"), b"x", 6) == b"echo:x"


def limited(snapshot: Snapshot, limits: PoolLimits) -> Snapshot:
    cluster = msgspec.structs.replace(snapshot.clusters[0], limits=limits)
    return msgspec.structs.replace(snapshot, clusters=(cluster,))


async def test_the_clusters_max_connections_closes_connections_past_it(
    start: Start, upstream: Upstream
) -> None:
    snapshot = vip_snapshot((Endpoint("127.0.0.1", upstream.port),))
    proxy = await start(limited(snapshot, PoolLimits(max_connections=1)))
    port = proxy.tcp.port("vip|tcp")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"first")
        assert await asyncio.wait_for(reader.readexactly(10), 5.0) == b"echo:first"
        assert await exchange(port, b"second") == b""
        overflow = ('response_flags="UO"', 'reporter="source"')
        assert counter(proxy, "istio_tcp_connections_closed_total", *overflow) == 1
    finally:
        writer.close()
    await eventually(lambda: proxy.clusters[SERVICE].counters.connections == 0)
    assert await exchange(port, b"third") == b"echo:thirdbye"


async def test_an_idle_connection_is_closed_after_the_clusters_tcp_idle_timeout(
    start: Start, upstream: Upstream
) -> None:
    snapshot = vip_snapshot((Endpoint("127.0.0.1", upstream.port),))
    proxy = await start(limited(snapshot, PoolLimits(tcp_idle_timeout=0.2)))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.tcp.port("vip|tcp"))
    try:
        writer.write(b"hi")
        assert await asyncio.wait_for(reader.readexactly(7), 5.0) == b"echo:hi"
        assert await asyncio.wait_for(reader.read(), 5.0) == b""
    finally:
        writer.close()
    assert proxy.stats.counters["gossamer_tcp_idle_timeouts_total"] == 1
    await eventually(lambda: not list(proxy.tcp.connections()))


async def test_a_proxy_with_only_tcp_listeners_is_ready_and_lists_them(
    start: Start, upstream: Upstream
) -> None:
    proxy = await start(vip_snapshot((Endpoint("127.0.0.1", upstream.port),)))
    admin = AdminServer(proxy)
    await admin.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{admin.port}") as http:
            assert (await http.get("/ready")).status_code == 200
            listed = (await http.get("/listeners")).json()
    finally:
        await admin.close()
    port = proxy.tcp.port("vip|tcp")
    assert listed == [
        {
            "name": "vip|tcp",
            "address": f"127.0.0.1:{port}",
            "role": "outbound",
            "protocol": "tcp",
            "connections": 0,
        }
    ]


async def test_connections_are_spread_over_the_routes_clusters_by_weight(start: Start) -> None:
    first, second = await Upstream().start(), await Upstream().start()
    try:
        clusters = (
            Cluster(name="one", endpoints=(Endpoint("127.0.0.1", first.port),)),
            Cluster(name="two", endpoints=(Endpoint("127.0.0.1", second.port),)),
        )
        route = TcpRoute(clusters=(WeightedCluster("one", 3), WeightedCluster("two", 1)))
        listener = msgspec.structs.replace(tcp_listener("split", "one"), tcp=route)
        proxy = await start(Snapshot(version="1", listeners=(listener,), clusters=clusters))
        port = proxy.tcp.port("split")
        for _ in range(40):
            assert await exchange(port, b"x") == b"echo:xbye"
        # 3 to 1: with 40 connections, each side is all but certain to get a share.
        assert first.connections + second.connections == 40
        assert first.connections > second.connections > 0
    finally:
        first.close()
        second.close()


async def test_each_connection_has_an_access_log_line_when_it_ends(
    ca: CertificateAuthority,
    tmp_path: Path,
    start: Start,
    upstream: Upstream,
    capsys: pytest.CaptureFixture[str],
) -> None:
    deny = AuthzPolicy(
        name="data/deny-default",
        action="DENY",
        rules=(AuthzRule(sources=(AuthzSource(namespaces=("default",)),)),),
    )
    snapshot = sidecar_snapshot(upstream.port, ca.roots, policies=(deny,))
    logged = msgspec.structs.replace(snapshot, telemetry=Telemetry(access_log=True))
    sidecar = await start(logged, issue(ca, REDIS, tmp_path / "r"))
    endpoint = Endpoint("127.0.0.1", sidecar.tcp.port("inbound|tcp|6379"), identity=REDIS)
    source = await start(
        msgspec.structs.replace(
            vip_snapshot((endpoint,), ca.roots), telemetry=Telemetry(access_log=True)
        ),
        issue(ca, FRONTEND, tmp_path / "f"),
    )
    assert await exchange(source.tcp.port("vip|tcp"), b"x", 6) == b""

    seen: list[dict[str, object]] = []

    def both_logged() -> bool:
        seen.extend(json.loads(line) for line in capsys.readouterr().out.splitlines())
        return len(seen) >= 2

    # The source's line comes when its connection ends: after the sidecar's close.
    await eventually(both_logged, timeout=HALF_CLOSED_IDLE + 10)
    by_listener = {entry["listener"]: entry for entry in seen}
    denied = by_listener["inbound|tcp|6379"]
    assert denied["response_flags"] == "RBAC"
    assert denied["authz_policy"] == "data/deny-default"
    assert denied["downstream_peer_principal"] == FRONTEND
    assert denied["upstream_cluster"] is None
    called = by_listener["vip|tcp"]
    assert called["protocol"] == "TCP"
    assert called["upstream_cluster"] == SERVICE
    assert called["upstream_host"] == f"127.0.0.1:{sidecar.tcp.port('inbound|tcp|6379')}"
    assert called["bytes_received"] == 1


async def test_a_new_snapshot_keeps_the_socket_and_open_connections(start: Start) -> None:
    first, second = await Upstream().start(), await Upstream().start()
    try:
        proxy = await start(vip_snapshot((Endpoint("127.0.0.1", first.port),)))
        port = proxy.tcp.port("vip|tcp")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"before")
        assert await asyncio.wait_for(reader.readexactly(11), 5.0) == b"echo:before"
        moved = vip_snapshot((Endpoint("127.0.0.1", second.port),))
        await proxy.apply(msgspec.structs.replace(moved, version="2"))
        assert proxy.tcp.port("vip|tcp") == port
        # The open connection carries on to the endpoint it had; new ones go to the new one.
        writer.write(b"after")
        assert await asyncio.wait_for(reader.readexactly(10), 5.0) == b"echo:after"
        assert await exchange(port, b"new") == b"echo:newbye"
        assert (first.connections, second.connections) == (1, 1)
        writer.close()
    finally:
        first.close()
        second.close()


async def test_a_removed_listener_drains_its_connections_then_drops_them(
    start: Start, upstream: Upstream
) -> None:
    snapshot = vip_snapshot((Endpoint("127.0.0.1", upstream.port),))
    [listener] = snapshot.listeners
    short = msgspec.structs.replace(listener, limits=ListenerLimits(drain_timeout=0.5))
    proxy = await start(msgspec.structs.replace(snapshot, listeners=(short,)))
    port = proxy.tcp.port("vip|tcp")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"hi")
        assert await asyncio.wait_for(reader.readexactly(7), 5.0) == b"echo:hi"
        await proxy.apply(msgspec.structs.replace(snapshot, version="2", listeners=()))
        # Still served while it drains; closed at the drain deadline.
        writer.write(b"still")
        assert await asyncio.wait_for(reader.readexactly(10), 5.0) == b"echo:still"
        assert await asyncio.wait_for(reader.read(), 5.0) == b""
    finally:
        writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_an_upstream_that_is_not_who_its_endpoint_says_is_skipped(
    ca: CertificateAuthority, tmp_path: Path, start: Start, upstream: Upstream
) -> None:
    identity = issue(ca, REDIS, tmp_path)
    one, two = [await start(sidecar_snapshot(upstream.port, ca.roots), identity) for _ in "12"]
    expected = spiffe_id("cluster.local", "data", "other")
    impostor = Endpoint("127.0.0.1", one.tcp.port("inbound|tcp|6379"), identity=expected)
    genuine = Endpoint("127.0.0.1", two.tcp.port("inbound|tcp|6379"), identity=REDIS)
    sidecar_on_both = msgspec.structs.replace(
        vip_snapshot((impostor, genuine), ca.roots), version="2"
    )
    source = await start(sidecar_on_both, issue(ca, FRONTEND, tmp_path / "f"))
    for _ in range(3):
        assert await exchange(source.tcp.port("vip|tcp"), b"k", 6) == b"echo:k"
    assert counter(source, "gossamer_upstream_connect_failures_total") >= 1
    assert counter(source, "istio_tcp_connections_opened_total", 'response_flags="-"') == 3
