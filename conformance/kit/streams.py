"""Stream helpers for cases: every wait bounded, every failure saying what was seen."""

from __future__ import annotations

import socket
import struct

import trio

from conformance.context import CaseContext
from conformance.recording import RecordingStream, unwrap
from conformance.showbytes import first_difference
from conformance.transcript import RESET
from conformance.vocabulary import CaseFailed, Unsupported

# Without progress for this long, a peer that should be sending is taken to have stalled.
IDLE_SECONDS = 3.0
# One read's worth: also the margin by which what is held can exceed what a case expects, since a
# read of CHUNK bytes can bring that much more than was asked for.
CHUNK = 65536


async def receive_exactly(
    ctx: CaseContext,
    stream: trio.abc.ReceiveStream,
    count: int,
    *,
    doing: str,
    idle: float = IDLE_SECONDS,
    expected: bytes | None = None,
) -> bytes:
    """Read exactly ``count`` bytes, all that the peer may have sent so far; fail on more, on EOF, or on
    ``idle`` seconds without any new byte.

    Each read asks for a whole CHUNK, so that a peer sending more than it should is caught (with at most
    ``count + CHUNK`` bytes held), not left unread. With ``expected``, a shortfall also says whether what
    did arrive was right so far.
    """
    received = bytearray()
    while len(received) < count:
        with trio.move_on_after(ctx.seconds(idle)) as scope:
            chunk = await stream.receive_some(CHUNK)
        if scope.cancelled_caught or not chunk:
            what = f"no data for {ctx.seconds(idle):.1f} s" if scope.cancelled_caught else "the connection was closed"
            summary = f"{what} {doing}: got {len(received)} of {count} bytes"
            if expected is not None and received and not expected.startswith(received):
                offset = first_difference(expected, bytes(received))
                summary += f", and they differ from what was sent from byte {offset} (bytes were lost or altered)"
            raise CaseFailed(summary, actual=bytes(received) if received else None)
        received += chunk
        if len(received) > count:
            raise CaseFailed(_too_much(count, len(received), doing), actual=bytes(received))
    return bytes(received)


def _too_much(limit: int, received: int, doing: str) -> str:
    # Reading stops here: the rest, however much, is never held.
    return (
        f"the server sent more than the {limit} bytes expected {doing} "
        f"({received} arrived before the suite stopped reading)"
    )


async def receive_until_eof(
    ctx: CaseContext, stream: trio.abc.ReceiveStream, *, limit: int, doing: str, idle: float = IDLE_SECONDS
) -> bytes:
    """Read until EOF; fail on ``idle`` seconds without news, or when more than ``limit`` bytes come."""
    received = bytearray()
    while True:
        with trio.move_on_after(ctx.seconds(idle)) as scope:
            chunk = await stream.receive_some(CHUNK)
        if scope.cancelled_caught:
            raise CaseFailed(
                f"no data and no EOF for {ctx.seconds(idle):.1f} s {doing}, after {len(received)} bytes",
                actual=bytes(received) if received else None,
            )
        if not chunk:
            return bytes(received)
        received += chunk
        if len(received) > limit:
            raise CaseFailed(_too_much(limit, len(received), doing), actual=bytes(received))


def require_half_close(stream: trio.abc.Stream) -> trio.abc.HalfCloseableStream:
    """The stream, if it can close one direction; Unsupported (TLS) otherwise. Call before any I/O."""
    if not isinstance(stream, trio.abc.HalfCloseableStream):
        raise Unsupported("half-close cannot be expressed over TLS: a TLS stream cannot close one direction")
    return stream


async def send_eof(stream: trio.abc.Stream) -> None:
    await require_half_close(stream).send_eof()


def _socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType:
    stream = unwrap(stream)
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if not isinstance(stream, trio.SocketStream):
        raise TypeError(f"no socket under {stream!r}")
    return stream.socket


def reset(stream: trio.abc.Stream) -> None:
    """Abort the connection with a TCP RST, as a crashing client would, instead of a FIN."""
    sock = _socket_of(stream)
    if isinstance(stream, RecordingStream):
        stream.marker(RESET, "sent by the suite")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
