"""A real HTTP/1.1 upstream for proxy tests, on a real socket, whose behaviour requests choose.

Request headers that steer it: x-status (status code), x-delay (seconds before answering),
x-chunked (answer with a chunked body), x-body-size (answer with that many bytes), x-close
(close the connection after answering). It answers with JSON describing what it received.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field


@dataclass
class Received:
    """One request as the backend saw it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


@dataclass
class Backend:
    """An in-process upstream server; `requests` and `connections` record what happened."""

    name: str = "backend"
    server: asyncio.Server | None = None
    requests: list[Received] = field(default_factory=list)
    connections: int = 0
    fail_next: list[int] = field(default_factory=list)
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in list(self.writers):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.add(writer)
        try:
            while True:
                received = await _read_request(reader)
                if received is None:
                    return
                self.requests.append(received)
                close = await self._answer(received, writer)
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.writers.discard(writer)
            writer.close()

    async def _answer(self, received: Received, writer: asyncio.StreamWriter) -> bool:
        delay = float(received.header("x-delay") or 0)
        if delay:
            await asyncio.sleep(delay)
        status = int(received.header("x-status") or 200)
        if self.fail_next:
            status = self.fail_next.pop(0)
        size = received.header("x-body-size")
        if size is not None:
            body = b"z" * int(size)
        else:
            body = json.dumps(
                {
                    "backend": self.name,
                    "method": received.method,
                    "target": received.target,
                    "headers": received.headers,
                    "body": received.body.decode("latin-1"),
                }
            ).encode()
        close = received.header("x-close") is not None
        head = [f"HTTP/1.1 {status} Whatever", f"x-backend: {self.name}"]
        if received.header("x-chunked"):
            head.append("transfer-encoding: chunked")
            middle = len(body) // 2
            payload = (
                b"".join(
                    b"%x\r\n%b\r\n" % (len(part), part)
                    for part in (body[:middle], body[middle:])
                    if part
                )
                + b"0\r\nx-trailer: done\r\n\r\n"
            )
        else:
            head.append(f"content-length: {len(body)}")
            payload = body
        if close:
            head.append("connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        if received.method != "HEAD":
            writer.write(payload)
        await writer.drain()
        return close


async def _read_request(reader: asyncio.StreamReader) -> Received | None:
    line = await reader.readline()
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: list[tuple[str, str]] = []
    while True:
        raw = await reader.readline()
        if raw in (b"\r\n", b""):
            break
        key, _, value = raw.decode("latin-1").partition(":")
        headers.append((key.strip(), value.strip()))
    lowered = {k.lower(): v for k, v in headers}
    body = b""
    if lowered.get("transfer-encoding", "").lower() == "chunked":
        while True:
            line = await reader.readline()
            if not line:
                # The proxy gave up on this request midway (its client broke the body).
                raise asyncio.IncompleteReadError(b"", None)
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    elif "content-length" in lowered:
        body = await reader.readexactly(int(lowered["content-length"]))
    return Received(method, target, headers, body)
