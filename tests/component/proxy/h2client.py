"""A small HTTP/2 client for proxy tests: h2's state machine on an asyncio connection.

Several requests go out on one connection at once; each answer is collected with its status,
headers, body, trailers, and the error code of a RST_STREAM if the proxy reset the stream.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


@dataclass
class Answer:
    """What came back on one stream."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] = field(default_factory=dict)
    reset: int | None = None
    """The RST_STREAM error code, when the proxy reset the stream."""
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class H2Client:
    """One HTTP/2 connection to the proxy, with prior knowledge (or over TLS with ALPN h2)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    conn: h2.connection.H2Connection
    answers: dict[int, Answer] = field(default_factory=dict)
    goaway: int | None = None
    """The GOAWAY error code, once one came."""
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    reading: asyncio.Task[None] | None = None
    auto_ack: bool = True
    """Credit response bodies back at once (False: the test opens windows itself)."""
    waiting: dict[int, tuple[bytes, bool]] = field(default_factory=dict)
    """Request body the proxy's window has no room for yet, by stream."""

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        window: int | None = None,
        validate: bool = True,
    ) -> H2Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=validate,
            normalize_outbound_headers=validate,
        )
        conn = h2.connection.H2Connection(config)
        if window is not None:
            conn.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
            )
        conn.initiate_connection()
        client = cls(reader, writer, conn)
        client.flush()
        client.reading = asyncio.get_running_loop().create_task(client._read())
        return client

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def request(
        self,
        path: str = "/",
        *,
        method: str = "GET",
        authority: str = "example.test",
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
        end: bool = True,
    ) -> int:
        """Open a stream and send a request; its body, if any, as far as the window allows."""
        stream_id = self.conn.get_next_available_stream_id()
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"http"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            *(headers or []),
        ]
        self.answers[stream_id] = Answer()
        self.conn.send_headers(stream_id, fields, end_stream=end and not body)
        if body:
            self.send_body(stream_id, body, end=end)
        self.flush()
        return stream_id

    def send_body(self, stream_id: int, body: bytes, *, end: bool = True) -> None:
        window = self.conn.local_flow_control_window(stream_id)
        if not window:
            self.waiting[stream_id] = (body, end)
            return
        chunk = body[: min(window, self.conn.max_outbound_frame_size)]
        self.conn.send_data(stream_id, chunk, end_stream=end and len(chunk) == len(body))
        self.flush()
        rest = body[len(chunk) :]
        if rest:
            self.waiting[stream_id] = (rest, end)

    def reset(self, stream_id: int, code: int = 8) -> None:
        self.waiting.pop(stream_id, None)
        self.conn.reset_stream(stream_id, code)
        self.flush()

    async def answer(self, stream_id: int, timeout: float = 10.0) -> Answer:
        answer = self.answers[stream_id]
        await asyncio.wait_for(answer.done.wait(), timeout)
        return answer

    async def get(self, path: str = "/", **kwargs: object) -> Answer:
        return await self.answer(self.request(path, **kwargs))  # type: ignore[arg-type]

    async def close(self) -> None:
        if self.reading is not None:
            self.reading.cancel()
        self.writer.close()

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                for event in self.conn.receive_data(data):
                    self._on_event(event)
                self.flush()
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            self.closed.set()
            for answer in self.answers.values():
                answer.done.set()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            answer = self.answers[event.stream_id]
            headers = {k.decode(): v.decode() for k, v in event.headers}
            answer.status = int(headers.pop(":status"))
            answer.headers = headers
        elif isinstance(event, h2.events.DataReceived):
            self.answers[event.stream_id].body += event.data
            if self.auto_ack and event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            self.answers[event.stream_id].trailers = {
                k.decode(): v.decode() for k, v in event.headers
            }
        elif isinstance(event, h2.events.StreamEnded):
            self.answers[event.stream_id].done.set()
        elif isinstance(event, h2.events.StreamReset):
            answer = self.answers.get(event.stream_id)
            if answer is not None:
                answer.reset = int(event.error_code)
                answer.done.set()
        elif isinstance(event, h2.events.WindowUpdated):
            for stream_id, (rest, end) in list(self.waiting.items()):
                del self.waiting[stream_id]
                self.send_body(stream_id, rest, end=end)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = int(event.error_code or 0)


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """One raw HTTP/2 frame."""
    return (
        len(payload).to_bytes(3, "big")
        + bytes([kind, flags])
        + stream_id.to_bytes(4, "big")
        + payload
    )
