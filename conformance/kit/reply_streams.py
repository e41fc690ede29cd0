"""One connection to a length-prefixed target, the suite being the client: what every such protocol's
conversation does the same way.

A subclass gives the decoder of its replies (:meth:`ReplyStream._new_decoder`), reads them in its own
``reply``, and says what a reply is where the server should have closed (:meth:`ReplyStream._not_closed`).
This class keeps the tail of what arrived for failure messages, and turns the decoder's errors into
failures that say which reply they were in.
"""

from __future__ import annotations

from typing import ClassVar, Generic, Protocol, Self, TypeVar

import trio

from conformance.context import CaseContext
from conformance.kit.streams import require_half_close
from conformance.vocabulary import CaseFailed
from harness._kit.framing import NEED_DATA, FrameLengthError, IncompleteStream, NeedData, RemoteProtocolError

__all__ = ["CLOSE_SECONDS", "SHOWN_BYTES", "ReplyDecoder", "ReplyStream"]

# Bytes of what the server sent last shown in a failure: enough for a reply header or two.
SHOWN_BYTES = 200
# After a reply that ends the connection, or after the client's EOF, the server closes this soon.
CLOSE_SECONDS = 2.0

EventT = TypeVar("EventT")
EventT_co = TypeVar("EventT_co", covariant=True)


class ReplyDecoder(Protocol[EventT_co]):
    @property
    def buffered(self) -> int: ...

    def receive_data(self, data: bytes | bytearray) -> None: ...

    def next_event(self) -> EventT_co | NeedData: ...


class ReplyStream(Generic[EventT]):
    """The connection, its reply decoder, and the last SHOWN_BYTES bytes received."""

    #: What ``_receive`` raises when the server has ended the connection without the courtesy of EOF
    #: (a reset, or TLS without close_notify): an end for :meth:`expect_close`.
    abrupt_ends: ClassVar[tuple[type[Exception], ...]] = (trio.BrokenResourceError, OSError)
    #: The decoder's event for the server's EOF between replies.
    connection_closed: ClassVar[type]

    def __init__(self, ctx: CaseContext, stream: trio.abc.Stream) -> None:
        self.ctx = ctx
        self.stream = stream
        self.decoder = self._new_decoder()
        self.received = bytearray()
        self.received_total = 0

    def _new_decoder(self) -> ReplyDecoder[EventT]:
        raise NotImplementedError

    @classmethod
    async def open(cls, ctx: CaseContext) -> Self:
        return cls(ctx, await ctx.connect())

    async def close(self) -> None:
        """Close politely now, so that a server serving one connection at a time can go on."""
        await self.ctx.close(self.stream)

    async def send_eof(self) -> None:
        """Shut the write side (TCP); over TLS the case should have been made unsupported first."""
        await require_half_close(self.stream).send_eof()

    async def _receive(self, idle: float, doing: str) -> bool:
        """Feed the decoder what arrives; False after ``idle`` seconds without anything."""
        raise NotImplementedError

    def _not_closed(self, event: EventT, doing: str) -> CaseFailed:
        """The failure for ``event``, where the server should have closed the connection."""
        raise NotImplementedError

    async def expect_close(self, doing: str, *, idle: float = CLOSE_SECONDS) -> None:
        """The server ends the connection without another reply: EOF (a reset is taken as an end too)."""
        while True:
            event = self._next_event(doing)
            if isinstance(event, self.connection_closed):
                return
            if event is not NEED_DATA:
                raise self._not_closed(event, doing)
            try:
                got = await self._receive(idle, doing)
            except self.abrupt_ends:
                return  # a reset, or TLS without close_notify: closed, if not politely
            if not got:
                raise CaseFailed(
                    f"the server kept the connection open {doing}: no EOF within {self.ctx.seconds(idle):.1f} s"
                )

    def _next_event(self, doing: str) -> EventT | NeedData:
        try:
            return self.decoder.next_event()
        except FrameLengthError as exc:
            raise self._length_failure(exc, doing) from None
        except RemoteProtocolError as exc:
            raise CaseFailed(f"malformed reply {doing}: {exc.message}", actual=self._shown()) from None
        except IncompleteStream as exc:
            raise CaseFailed(
                f"the server closed the connection inside a reply {doing}: {exc}", actual=self._shown()
            ) from None

    def _length_failure(self, error: FrameLengthError, doing: str) -> CaseFailed:
        """The failure for a reply whose length prefix is out of range."""
        return CaseFailed(f"malformed reply {doing}: {error.message}", actual=self._shown())

    def _feed(self, data: bytes | bytearray) -> None:
        # The decoder holds less than one frame beyond what has been asked for; only the tail is kept here.
        self.decoder.receive_data(data)
        self.received_total += len(data)
        self.received = (self.received + data[-SHOWN_BYTES:])[-SHOWN_BYTES:]

    def _shown(self) -> bytes:
        return bytes(self.received)
