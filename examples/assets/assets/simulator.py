"""simulator: gives the dashboard something to show.

It signs in as the admin, creates two operators and a sensor gateway account (role `device`),
adds a dozen assets across three sites, then sends a batch of readings every second for every
asset. A few assets drift toward failure (temperature climbing, vibration growing, pressure
turning erratic) until "maintenance" resets them, so risk bands change both ways while you
watch. It runs inside the mesh and calls the services by name, as a site's gateway would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from assets import kit

log = logging.getLogger("simulator")
USERS = "http://users-svc:8080/users"
AUTH = "http://auth-svc:8080/auth"
ASSETS = "http://asset-mgr-ms-svc:8080/assetmgrms/assets"
READINGS = "http://asset-consumer-svc:8080/assetconsumer/readings"
PERIOD_S = float(os.environ.get("SIMULATOR_PERIOD", "1.0"))
DRIFT_S = float(os.environ.get("SIMULATOR_DRIFT_SECONDS", "40"))
DEMO_PASSWORD = "demo-password-1"
SITES = ("rotterdam", "lyon", "porto")
FLEET = [
    (f"{kind}-{site[:3]}-{n}", kind, site)
    for site in SITES
    for n, kind in enumerate(("pump", "turbine", "compressor", "motor"))
]
BASELINE = {"temperature": (60.0, 2.0), "vibration": (2.0, 0.4), "pressure": (5.0, 0.15)}


@dataclass
class Machine:
    """One asset's sensors: healthy noise, or a drift that grows until maintenance."""

    asset_id: str
    drifting_since: float | None = None
    rng: random.Random = field(default_factory=random.Random)

    def readings(self, now: float) -> list[dict[str, Any]]:
        wear = 0.0
        if self.drifting_since is not None:
            wear = min((now - self.drifting_since) / DRIFT_S, 1.5)
        out = []
        for sensor, (mean, spread) in BASELINE.items():
            value = self.rng.gauss(mean, spread)
            if sensor == "temperature":
                value += 25.0 * wear
            elif sensor == "vibration":
                value += 4.0 * wear + self.rng.gauss(0, 0.8 * wear)
            else:
                value += self.rng.gauss(0, 1.2 * wear) + 0.5 * math.sin(now) * wear
            out.append({"assetId": self.asset_id, "sensor": sensor, "value": round(value, 3)})
        return out


class Session:
    """A signed-in account: its bearer token, renewed before it expires."""

    def __init__(self, client: httpx.AsyncClient, username: str, password: str) -> None:
        self.client, self.username, self.password = client, username, password
        self.token, self.expires, self.user_id = "", 0.0, ""

    async def headers(self) -> dict[str, str]:
        if time.monotonic() > self.expires - 30:
            answer = await self.client.post(
                f"{AUTH}/login", json={"username": self.username, "password": self.password}
            )
            answer.raise_for_status()
            tokens = answer.json()
            self.token, self.user_id = tokens["accessToken"], tokens["userId"]
            self.expires = time.monotonic() + tokens["expiresIn"]
        return {"authorization": f"Bearer {self.token}"}


async def _until_ok(what: str, call: Any) -> Any:
    """Retry `call` until it answers (services and views start in any order)."""
    while True:
        try:
            return await call()
        except (httpx.HTTPError, KeyError) as error:
            log.info("waiting for %s: %s", what, error)
            await asyncio.sleep(1.0)


async def _account(
    client: httpx.AsyncClient,
    admin: Session,
    username: str,
    roles: list[str],
    permissions: list[str],
) -> None:
    answer = await client.post(
        USERS,
        headers=await admin.headers(),
        json={
            "username": username,
            "email": f"{username}@greencompute.local",
            "password": DEMO_PASSWORD,
            "roles": roles,
            "permissions": permissions,
        },
    )
    if answer.status_code not in (201, 409):
        answer.raise_for_status()


async def setup(client: httpx.AsyncClient) -> tuple[Session, list[Machine]]:
    admin = Session(client, "admin", os.environ.get("ADMIN_PASSWORD", "admin-demo-password"))
    await _until_ok("the admin's login", admin.headers)
    for name in ("ada", "grace"):
        await _account(client, admin, name, ["user", "operator"], ["assets:write"])
    await _account(client, admin, "sensor-gateway", ["device"], ["readings:write"])
    operators = [Session(client, name, DEMO_PASSWORD) for name in ("ada", "grace")]
    for operator in operators:
        await _until_ok(f"{operator.username}'s login", operator.headers)
    existing = (await client.get(ASSETS, params={"status": "active"})).json()["assets"]
    by_name = {asset["name"]: asset["assetId"] for asset in existing}
    machines = []
    for index, (name, kind, site) in enumerate(FLEET):
        if name not in by_name:
            owner = operators[index % 2]
            answer = await client.post(
                ASSETS,
                headers=await admin.headers(),
                json={"name": name, "type": kind, "site": site, "owner": owner.user_id},
            )
            answer.raise_for_status()
            by_name[name] = answer.json()["assetId"]
        machines.append(Machine(by_name[name], rng=random.Random(index)))
    return Session(client, "sensor-gateway", DEMO_PASSWORD), machines


async def simulate(stop: asyncio.Event) -> None:
    async with kit.mesh_client(timeout=10.0) as client:
        device, machines = await setup(client)
        log.info("simulating %d assets; %d drift toward failure", len(machines), 3)
        drift = random.Random(7)
        started = time.monotonic()
        for index in (1, 6, 10):  # some drift from the start, so that bands change soon
            machines[index].drifting_since = started - index
        while not stop.is_set():
            now = time.monotonic()
            for machine in machines:
                if (
                    machine.drifting_since is not None
                    and now - machine.drifting_since > 2 * DRIFT_S
                ):
                    machine.drifting_since = None  # maintenance
                elif machine.drifting_since is None and drift.random() < 0.003:
                    machine.drifting_since = now
            batch = [reading for machine in machines for reading in machine.readings(now)]
            try:
                answer = await client.post(
                    READINGS, headers=await device.headers(), json={"readings": batch}
                )
                if answer.status_code >= 400:
                    log.warning("readings refused: %s %s", answer.status_code, answer.text[:200])
            except httpx.HTTPError as error:
                log.warning("readings not sent: %s", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PERIOD_S)


if __name__ == "__main__":
    kit.serve(kit.application([], background=[simulate]))
