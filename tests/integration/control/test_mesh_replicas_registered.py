"""Two control-plane replicas on one etcd, endpoints registered by a real sidecar, and each
replica killed in turn under load: the proxies move to the survivor, their instances stay
registered and ready throughout (past the TTL of the dead replica's lease), no request fails."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import sys
import uuid
from pathlib import Path

import httpx

from ...component.control.test_mesh_push import deployment
from ...component.proxy.backend import Backend
from .etcd import EtcdServer
from .test_mesh_replicas import ISTIO, Load, Replica, free_port, until

INSTANCE_TTL_S = 10.0
"""The TTL of an instance whose proxy or replica is gone (`--instance-ttl`; 30 s by default)."""
TTL_OPTION = ("--instance-ttl", f"{INSTANCE_TTL_S:g}s")
APPS = "/apis/apps/v1/namespaces/default/deployments"


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "reviews"},
    "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080}]},
}


async def sidecar(
    urls: str, token_file: Path, roots: Path, log: Path, *args: str
) -> asyncio.subprocess.Process:
    with log.open("w") as output:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "gossamer", "proxy", "--control-plane", urls, "--ca-file", str(roots)),
            *("--token-file", str(token_file), "--admin", "127.0.0.1:0", *args),
            stderr=output,
        )


async def registered(http: httpx.AsyncClient, replica: Replica) -> list[str]:
    """The replica each reviews instance is registered with, if it is ready."""
    listed = await http.get(f"{replica.url}{ISTIO}/workloadentries")
    owners = []
    for item in listed.json()["items"]:
        if item["metadata"]["annotations"].get("gossamer.dev/workload") != "reviews":
            continue
        healthy = item.get("status", {}).get("conditions", [{}])[0].get("status") == "True"
        if healthy:
            owners.append(item["metadata"]["annotations"]["gossamer.dev/controller"])
    return owners


async def test_killing_each_replica_in_turn_keeps_registered_endpoints_and_fails_no_request(
    tmp_path: Path, etcd_server: EtcdServer
) -> None:
    state = tmp_path / "state"
    store = f"etcd://{etcd_server.url.removeprefix('http://')}/mesh-{uuid.uuid4().hex}"
    first = Replica(free_port(), store, state, TTL_OPTION)
    second = Replica(free_port(), store, state, TTL_OPTION)
    backend = await Backend("v1").start()
    proxies: list[asyncio.subprocess.Process] = []
    load_task: asyncio.Task[None] | None = None
    try:
        await first.start()
        await second.start()
        roots = state / "ca" / "trust-bundle.pem"
        token = (state / "admin-token").read_text().strip()
        http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"},
            timeout=10.0,
            verify=ssl.create_default_context(cafile=str(roots)),
        )
        for path, body in (
            (APPS, deployment("productpage", app="productpage")),
            (APPS, deployment("reviews", app="reviews")),
            ("/api/v1/namespaces/default/services", SERVICE),
        ):
            assert (await http.post(f"{first.url}{path}", json=body)).status_code == 201
        tokens = {}
        for workload in ("productpage", "reviews"):
            minted = await http.post(
                f"{first.url}/auth/v1/namespaces/default/workloadtokens",
                json={"workload": workload},
            )
            tokens[workload] = tmp_path / f"{workload}.token"
            tokens[workload].write_text(minted.json()["token"])
        urls = f"{first.url},{second.url}"
        proxies.append(
            await sidecar(
                urls,
                tokens["reviews"],
                roots,
                tmp_path / "reviews.log",
                *("--workload", "reviews", "--inbound-port", str(free_port())),
                *("--outbound-port", str(free_port()), "--app-port", str(backend.port)),
            )
        )
        outbound = free_port()
        proxies.append(
            await sidecar(
                urls,
                tokens["productpage"],
                roots,
                tmp_path / "productpage.log",
                *("--workload", "productpage"),
                *("--outbound-port", str(outbound), "--inbound-port", str(free_port())),
            )
        )
        load = Load(outbound)
        load_task = asyncio.get_running_loop().create_task(load.run())

        async def serving() -> bool:
            return load.recent(5) == {"v1"}

        await until(serving, 30, "requests reach reviews through both sidecars")

        async def held_by(replica: Replica) -> bool:
            """One reviews instance, ready, registered with `replica`."""
            assert replica.process is not None
            owners = await registered(http, replica)
            return len(owners) == 1 and f"-{replica.process.pid}-" in owners[0]

        load.failures.clear()  # before the first answer, the caller had no endpoint yet

        for doomed, survivor in ((first, second), (second, first)):
            await until(lambda r=doomed: held_by(r), 20, "the instance is held by the doomed one")
            doomed.kill()
            await until(lambda r=survivor: held_by(r), 20, "the instance moved, ready, intact")
            # Past the dead replica's lease: the survivor collects nothing that still serves.
            await asyncio.sleep(INSTANCE_TTL_S + 5)
            assert await held_by(survivor), await registered(http, survivor)
            assert load.failures == [], load.failures[:5]
            await doomed.start()
        served = len(load.served)
        assert served > 100, served
        await http.aclose()
    finally:
        if load_task is not None:
            load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load_task
        for proxy in proxies:
            if proxy.returncode is None:
                proxy.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proxy.wait(), 20)
        await first.stop()
        await second.stop()
        await backend.stop()
