"""Echo clients: one-shot round trips and a full-duplex relay for the ``harness echo`` command.

Over plain TCP a client knows the echo is complete when the server closes after our EOF.
TLS streams cannot half-close, so there the client relies on the echo having the length of
the request (true for every transform) and closes once that many bytes came back.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Awaitable, Callable

import trio

from harness._kit.tls import open_client_stream
from harness._kit.udp import open_udp_socket

# Matches the server's read size; large enough that a 1 MiB payload takes few iterations.
RECEIVE_SIZE = 65536
DATAGRAM_SIZE = 65535


#: Echo needs no more than a connection: plain TCP, or TLS with the handshake done.
open_echo_stream = open_client_stream


async def echo_once(
    host: str,
    port: int,
    data: bytes,
    *,
    udp: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float = 5.0,
) -> bytes:
    """Send *data* on a fresh connection (or as one datagram) and return what came back.

    TCP: sends while reading, half-closes, and reads until the server closes. TLS: reads until
    ``len(data)`` bytes or the server closes. UDP: returns the first datagram received.
    Raises :class:`trio.TooSlowError` after *timeout* seconds, :class:`OSError` or
    :class:`trio.BrokenResourceError` when the connection fails.
    """
    with trio.fail_after(timeout):
        if udp:
            with await open_udp_socket(host, port, connect=True) as sock:
                await sock.send(data)
                return await sock.recv(DATAGRAM_SIZE)
        stream = await open_echo_stream(host, port, ssl_context=ssl_context, server_hostname=server_hostname)
        async with stream:
            half_closeable = isinstance(stream, trio.abc.HalfCloseableStream)
            expected = math.inf if half_closeable else len(data)
            received = bytearray()

            async def send() -> None:
                try:
                    await stream.send_all(data)
                    if isinstance(stream, trio.abc.HalfCloseableStream):
                        await stream.send_eof()
                except trio.BrokenResourceError:
                    pass  # the server hung up early; the reading side sees how and returns what came

            async with trio.open_nursery() as nursery:
                # Reading while writing: a payload larger than both socket buffers would
                # otherwise deadlock against a server that echoes as it reads.
                nursery.start_soon(send)
                # Errors are raised after the nursery, so that callers get them unwrapped.
                error = await _receive_into(stream, received, expected)
                if len(received) < expected:
                    # The server closed (or broke) before a full echo: stop sending. Otherwise
                    # the sender is about done, and interrupting a TLS send would break the
                    # stream and skip our close_notify.
                    nursery.cancel_scope.cancel()
            if error is not None:
                raise error
            return bytes(received)


async def _receive_into(
    stream: trio.abc.Stream, received: bytearray, expected: float
) -> trio.BrokenResourceError | None:
    """Read until *expected* bytes or EOF; return (not raise) a broken connection."""
    try:
        while len(received) < expected:
            chunk = await stream.receive_some(RECEIVE_SIZE)
            if not chunk:
                break
            received.extend(chunk)
    except trio.BrokenResourceError as exc:
        return exc
    return None


ReadInput = Callable[[], Awaitable[bytes]]
WriteOutput = Callable[[bytes], Awaitable[None]]


class EchoNotClosedError(Exception):
    """The server did not finish echoing and close within the deadline after our EOF."""


async def relay(
    stream: trio.abc.Stream,
    read_input: ReadInput,
    write_output: WriteOutput,
    *,
    close_timeout: float = 5.0,
) -> None:
    """Copy ``read_input()`` chunks to *stream* and everything that comes back to *write_output*.

    Both directions run at once. *read_input* returns ``b""`` at the end of its input; the
    stream is then half-closed and the relay ends when the server closes. Over TLS, which
    cannot half-close, it ends once as many bytes came back as were sent. If the server closes
    first, the relay ends straight away. Raises :class:`EchoNotClosedError` when the server
    takes longer than *close_timeout* after the end of input (or after a failed send), and
    :class:`trio.BrokenResourceError` when the connection breaks while receiving.
    """
    half_closeable = isinstance(stream, trio.abc.HalfCloseableStream)
    sent = 0
    received = 0
    input_done = False
    timed_out = False
    # Failures are raised after the nursery, so that callers get them unwrapped.
    error: trio.BrokenResourceError | None = None

    async with trio.open_nursery() as nursery:

        def check_complete() -> None:
            # Over TLS nobody closes first: the echo is complete once it is as long as the input.
            if input_done and not half_closeable and received >= sent:
                nursery.cancel_scope.cancel()

        async def upload() -> None:
            nonlocal sent, input_done, timed_out
            try:
                while chunk := await read_input():
                    await stream.send_all(chunk)
                    sent += len(chunk)
                if isinstance(stream, trio.abc.HalfCloseableStream):
                    await stream.send_eof()
            except trio.BrokenResourceError:
                # The server hung up while we were sending; the receiving side sees how the
                # connection ended and still delivers what was echoed before that.
                pass
            else:
                input_done = True
                check_complete()
            # From here on the receiving side ends the relay, unless the server is too slow.
            await trio.sleep(close_timeout)
            timed_out = True
            nursery.cancel_scope.cancel()

        nursery.start_soon(upload)
        try:
            while chunk := await stream.receive_some(RECEIVE_SIZE):
                await write_output(bytes(chunk))
                received += len(chunk)
                check_complete()
        except trio.BrokenResourceError as exc:
            error = exc
        nursery.cancel_scope.cancel()

    if timed_out:
        raise EchoNotClosedError(
            f"server did not close the connection within {close_timeout:g} s after end of input"
            f" ({sent} bytes sent, {received} echoed)"
        )
    if error is not None:
        raise error
