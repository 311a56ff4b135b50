"""`gossamer events serve`: the broker's HTTP API on uvicorn, on a socket bound before start.

Order matters and is fixed: the service starts (log opened, topics declared) before the socket
accepts anything; on stop, uvicorn stops accepting and closes connections (open streams get
`graceful_s` to end), and only then does the service close the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import uvicorn

from gossamer.events.api import create_app
from gossamer.events.service import BrokerService, ServiceConfig, load_topics
from gossamer.events.topics import TopicConfig
from gossamer.listen import Listen


def url_of(sock: socket.socket) -> str:
    """The base URL a bound socket serves."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling, which would end the process before the log
    is closed: `serve` handles signals instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class BrokerServer:
    """A started BrokerService behind uvicorn; `async with` starts and stops both, in order."""

    def __init__(
        self,
        service: BrokerService,
        listen: Listen,
        declared: Sequence[TopicConfig] = (),
        *,
        graceful_s: float = 5.0,
    ) -> None:
        self.service = service
        self.listen = listen
        self.url = ""
        self._declared = list(declared)
        self._graceful_s = graceful_s
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    def __repr__(self) -> str:
        return f"<BrokerServer {self.url or 'not started'} {self.service!r}>"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self, timeout_s: float = 60.0) -> str:
        """Start the service, then accept connections; returns the URL."""
        await self.service.start(self._declared)
        self._sock = self.listen.bind()
        self.url = url_of(self._sock)
        config = uvicorn.Config(
            create_app(self.service),
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=int(max(1, self._graceful_s)),
        )
        self._server = _Uvicorn(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._server.started:
            if self._task.done():
                await self.stop()
                raise RuntimeError("the HTTP server stopped while starting")
            if loop.time() > deadline:
                await self.stop()
                raise TimeoutError(f"the HTTP server did not start within {timeout_s:g}s")
            await asyncio.sleep(0.01)
        return self.url

    async def wait(self) -> None:
        """Until the server exits (after `exit`)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    def exit(self) -> None:
        """Ask the server to stop accepting and finish (safe to call from a signal handler)."""
        if self._server is not None:
            self._server.should_exit = True

    async def stop(self) -> None:
        """Stop accepting, end connections within the grace period, then stop the service."""
        if self._server is not None and self._task is not None:
            self.service.begin_shutdown()
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), self._graceful_s + 10)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._server = self._task = None
        await self.service.stop()


async def serve(
    config: ServiceConfig,
    listen: Listen,
    manifests: Sequence[Path] = (),
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run a broker until SIGINT or SIGTERM; `on_ready` gets its URL once it accepts requests.

    On a signal, uvicorn stops accepting and ends open streams, then the log makes its last
    commit and checkpoint, and the function returns.
    """
    declared = load_topics(manifests)
    loop = asyncio.get_running_loop()
    async with BrokerServer(BrokerService(config), listen, declared) as server:
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, server.exit)
        # Everything built so far (the resource model, DuckDB, the app) lives as long as the
        # process: out of the collector's sight, full collections stop pausing requests
        # (measured: publish p99 55 ms -> 6 ms at 16 connections).
        gc.freeze()
        if on_ready is not None:
            on_ready(server.url)
        await server.wait()


def configure_logging(level: int = logging.INFO) -> None:
    """One line per message on stderr: what the broker does in the background."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
