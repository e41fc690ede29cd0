"""One client connection of a framed stream server (command, upload): how it ends, is logged and closed.

A subclass gives its request decoder, serves the requests in ``_serve_requests()`` (taking them
from ``_next_event()``) and says how a refused frame is answered in ``_error_reply()``;
:meth:`FramedConnection.serve` turns every way a connection can end into one log line and a
bounded close, so that one client's fault never reaches the server's other tasks.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Generic, TypeVar

import trio

from harness._kit.framing import NEED_DATA, FrameDecoder, IncompleteStream, RemoteProtocolError

__all__ = ["LINGER_SECONDS", "CloseConnection", "FramedConnection", "peer_name"]

# After an error reply that closes the connection, keep reading (and dropping) what the client still
# sends for this long: closing a socket with unread data makes the kernel send a reset, which can
# destroy the reply before the client reads it.
LINGER_SECONDS = 2.0


class CloseConnection(Exception):
    """The connection is over: the client went idle, or the reply said so."""


EventT = TypeVar("EventT")


def peer_name(stream: trio.abc.Stream) -> str:
    """``HOST:PORT`` of the client, ``"?"`` once it is gone, the stream's repr when not a socket."""
    transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if not isinstance(transport, trio.SocketStream):
        return repr(transport)
    try:
        host, port, *_ = transport.socket.getpeername()
    except OSError:
        return "?"
    return f"{host}:{port}"


class FramedConnection(Generic[EventT]):
    """Serves the requests of one client connection, in order."""

    decoder: FrameDecoder[EventT, Any]

    #: What one receive asks for.
    receive_size: ClassVar[int]
    #: Why the client is dropped when it does not accept a reply, with the timeout as ``{:g}``.
    send_timeout_reason: ClassVar[str]
    #: Appended to the log line of a stream that ended inside a request.
    incomplete_note: ClassVar[str] = ""

    def __init__(self, stream: trio.abc.Stream, logger: logging.Logger, *, idle_timeout: float) -> None:
        self.stream = stream
        self.logger = logger
        self.idle_timeout = idle_timeout
        self.peer = peer_name(stream)

    async def serve(self) -> None:
        """Serve until the client is done or breaks the protocol; never raises ``Exception``."""
        try:
            try:
                await self._serve_requests()
            except RemoteProtocolError as exc:
                self.logger.info("%s: %s: %s", self.peer, exc.code, exc.message)
                await self._send(self._error_reply(exc))
                await self._linger()
        except CloseConnection as exc:
            self.logger.info("%s: closing: %s", self.peer, exc)
        except IncompleteStream as exc:
            self.logger.info("%s: %s%s", self.peer, exc, self.incomplete_note)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            # Resets and failed TLS handshakes land here.
            self.logger.info("%s: connection lost: %s", self.peer, exc.__cause__ or exc)
        except Exception:
            self.logger.exception("%s: internal error; closing the connection", self.peer)
        finally:
            # Shielded so that a server shutdown still closes cleanly; bounded because a TLS
            # close_notify may wait on a client that reads nothing.
            with trio.move_on_after(LINGER_SECONDS, shield=True):
                try:
                    await self.stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

    async def _serve_requests(self) -> None:
        raise NotImplementedError

    async def _next_event(self) -> EventT:
        """The client's next request event, receiving until the decoder has one."""
        while True:
            event = self.decoder.next_event()
            if event is not NEED_DATA:
                return event
            with trio.move_on_at(self._receive_deadline()):
                data = await self.stream.receive_some(self.receive_size)
                self._received(len(data))
                self.decoder.receive_data(data)
                continue
            raise CloseConnection(self._silence_reason())

    def _receive_deadline(self) -> float:
        return trio.current_time() + self.idle_timeout

    def _received(self, nbytes: int) -> None:
        """``nbytes`` more came from the client (``0``: its end of stream)."""

    def _silence_reason(self) -> str:
        """Why the client is dropped when nothing came by ``_receive_deadline()``."""
        raise NotImplementedError

    def _error_reply(self, exc: RemoteProtocolError) -> bytes:
        """The reply to a frame the client got wrong; the connection closes after it."""
        raise NotImplementedError

    async def _send(self, data: bytes) -> None:
        with trio.move_on_after(self.idle_timeout):
            await self.stream.send_all(data)
            return
        raise CloseConnection(self.send_timeout_reason.format(self.idle_timeout))

    async def _linger(self) -> None:
        """Let the client read a closing reply: half-close, then drop its input for a while."""
        with trio.move_on_after(min(LINGER_SECONDS, self.idle_timeout)):
            if isinstance(self.stream, trio.abc.HalfCloseableStream):
                await self.stream.send_eof()
            while await self.stream.receive_some(self.receive_size):
                pass
