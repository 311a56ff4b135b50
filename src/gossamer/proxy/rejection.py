"""A refusal that waits its turn: a malformed request pipelined behind others is refused (with
`connection: close`) only after the requests before it have been answered as usual."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gossamer.proxy import local_reply as lr
from gossamer.proxy.exchange import Exchange
from gossamer.proxy.http1 import RequestHead

if TYPE_CHECKING:
    from gossamer.proxy.downstream import DownstreamConnection


class QueuedRejection(Exchange):
    """Stands in the pipeline queue where a request that could not be parsed would be."""

    __slots__ = ("refusal",)

    def __init__(self, client: DownstreamConnection, status: int, reason: str) -> None:
        super().__init__(client, RequestHead(b"", b"", "1.1", [], False))
        self.refusal = (status, reason)

    def start(self) -> None:
        """Its turn: refuse, and the connection closes after the answer."""
        status, reason = self.refusal
        self.local(status, reason, lr.DOWNSTREAM_PROTOCOL_ERROR)
