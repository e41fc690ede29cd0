"""How many connections a stream server holds, in all and from one address.

Each connection costs a descriptor and buffers; without a cap about 1030 idle connections shut
every other client out of a server with the usual limit of 1024 descriptors. A connection over
the cap is closed at once, and the refusals are logged once per burst.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from harness._kit.bursts import BurstLog

__all__ = ["MAX_CONNECTIONS", "MAX_CONNECTIONS_PER_HOST", "ConnectionGate", "peer_host"]

#: Connections at once, in all: well under the usual 1024 descriptors.
MAX_CONNECTIONS = 512
#: Connections at once from one IP address. Loopback clients share one address, so this stays
#: far above what a class's conformance runs open (tens of clients).
MAX_CONNECTIONS_PER_HOST = 256

Handler = Callable[[trio.abc.Stream], Awaitable[None]]


def peer_host(stream: trio.abc.Stream) -> str:
    """The peer's IP address, or ``"?"`` when the stream is not a connected socket."""
    transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if isinstance(transport, trio.SocketStream):
        try:
            return str(transport.socket.getpeername()[0])
        except OSError:
            pass
    return "?"


@dataclass
class ConnectionGate:
    logger: logging.Logger
    max_connections: int = MAX_CONNECTIONS
    max_per_host: int = MAX_CONNECTIONS_PER_HOST
    open: int = 0
    by_host: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_per_host < 1:
            raise ValueError("connection limits must be at least 1")
        self._log = BurstLog(self.logger)

    def refusal(self, host: str) -> str | None:
        if self.open >= self.max_connections:
            return f"{self.max_connections} connections at once"
        if self.by_host[host] >= self.max_per_host:
            return f"{self.max_per_host} connections from {host} at once"
        return None

    def guard(self, handler: Handler) -> Handler:
        """``handler`` for connections under the caps; the others are closed at once."""

        async def guarded(stream: trio.abc.Stream) -> None:
            host = peer_host(stream)
            reason = self.refusal(host)
            if reason is not None:
                self._log.log("refused", trio.current_time(), "connection from %s closed: %s", host, reason)
                await trio.aclose_forcefully(stream)
                return
            self.open += 1
            self.by_host[host] += 1
            try:
                await handler(stream)
            finally:
                self.open -= 1
                self.by_host[host] -= 1
                if not self.by_host[host]:
                    del self.by_host[host]

        return guarded
