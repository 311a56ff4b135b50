"""Keep the DNS directory current from the control plane: Services and WorkloadEntries, polled.

A poll every second is simple and bounded (two list requests), and DNS answers carry a TTL of a
few seconds anyway. A failed poll keeps the last answers: the DNS goes on answering.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pydantic

from gossamer.control.api.catalog import Catalog
from gossamer.discovery.catalog import service_records
from gossamer.discovery.directory import MemoryDirectory
from gossamer.resources import Resource
from gossamer.security.trust import (
    UntrustedServerError,
    client_context,
    describe_failure,
    tls_failure,
)
from gossamer.snapshot.vips import DEFAULT_VIP_NETWORK, assign_vips, services_of

log = logging.getLogger(__name__)

# StatefulSets too: each replica under a governing Service has a name (snapshot/podnames.py).
_LISTS = (
    "/api/v1/services",
    "/apis/networking.istio.io/v1/workloadentries",
    "/apis/apps/v1/statefulsets",
)


class ControlPlaneFollower:
    """Polls the control plane and replaces the directory's records when they change."""

    def __init__(
        self,
        directory: MemoryDirectory,
        url: str,
        token: str,
        *,
        vip_network: str = DEFAULT_VIP_NETWORK,
        interval_s: float = 1.0,
        ca_file: Path | None = None,
    ) -> None:
        self.directory = directory
        self.url = url.rstrip("/")
        self.token = token
        self.vip_network = vip_network
        self.interval_s = interval_s
        self.ca_file = ca_file
        """The roots an https control plane is verified with before the token is sent."""
        self.polls = 0
        self.failures = 0
        self.synced = asyncio.Event()
        self._catalog = Catalog()
        self._last: Any = None

    def __repr__(self) -> str:
        return f"<ControlPlaneFollower {self.url} polls={self.polls} failures={self.failures}>"

    async def run(self) -> None:
        """Poll until cancelled."""
        headers = {"Authorization": f"Bearer {self.token}"}
        verify = client_context(self.ca_file)
        async with httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=5.0, verify=verify
        ) as api:
            while True:
                try:
                    self.update(await self._fetch(api))
                except (httpx.HTTPError, ValueError) as error:
                    self.failures += 1
                    failure = tls_failure(error)
                    shown: Exception = error
                    if failure is not None:
                        shown = UntrustedServerError(
                            describe_failure(failure, self.url, self.ca_file)
                        )
                    log.warning(
                        "cannot read the control plane (%s); answers stay as they were", shown
                    )
                await asyncio.sleep(self.interval_s)

    async def _fetch(self, api: httpx.AsyncClient) -> list[Resource]:
        resources: list[Resource] = []
        for path in _LISTS:
            response = await api.get(path)
            response.raise_for_status()
            resources.extend(self._parse(response.json().get("items") or []))
        return resources

    def _parse(self, items: Sequence[Any]) -> list[Resource]:
        parsed = []
        for item in items:
            model = self._catalog.model_of(str(item.get("apiVersion")), str(item.get("kind")))
            if model is None:
                continue
            try:
                parsed.append(model.model_validate(item))
            except pydantic.ValidationError as error:
                log.warning("ignored an object the model does not accept: %s", error)
        return parsed

    def update(self, resources: Sequence[Resource]) -> None:
        """Recompute the records and swap them in when they differ."""
        self.polls += 1
        vips = assign_vips(services_of(resources), self.vip_network)
        records = service_records(resources, vips)
        if records != self._last:
            self._last = records
            self.directory.set(records)
        self.synced.set()
