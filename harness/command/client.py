"""The reference ``command`` client: run command lines on a server, one at a time or pipelined.

:class:`CommandSession` sends one command and hands its output to a callback as it arrives (a large
output is never held whole), which is what the terminal client does. :func:`run_commands_on`
pipelines several commands on one stream, reading replies while it writes, and gathers each reply
into a :class:`~harness.command.wire.Result`. Replies go through the sans-IO
:class:`~harness.command.wire.ReplyDecoder`, so they may arrive split at any byte.

Failures (connection refused or lost, a malformed reply, an error reply, no progress for
``timeout`` seconds) raise :class:`CommandClientError`.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence

import trio

from harness._kit.framing import NEED_DATA, FrameLengthError, IncompleteStream, RemoteProtocolError
from harness._kit.tls import connect_or_fail
from harness.command.wire import (
    Command,
    ConnectionClosed,
    ErrorReply,
    Output,
    ReplyDecoder,
    ReplyEnd,
    ReplyHeader,
    Result,
    ResultCollector,
    StreamName,
    encode_request,
)

RECEIVE_SIZE = 256 * 1024
CONNECT_SECONDS = 10.0

OutputCallback = Callable[[StreamName, bytes], None]
"""Called as ``on_output("stdout" or "stderr", data)`` for each piece of output as it arrives."""


class CommandClientError(Exception):
    """A command that did not get its whole reply."""


async def open_command_stream(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float = CONNECT_SECONDS,
) -> trio.abc.Stream:
    """A connection to a command server, TLS (handshake done) when ``ssl_context`` is given."""
    return await connect_or_fail(
        host,
        port,
        ssl_context=ssl_context,
        server_hostname=server_hostname,
        timeout=timeout,
        failure=CommandClientError,
    )


class CommandSession:
    """Replies read from one stream, in order; ``timeout`` (None: none) bounds each wait for bytes."""

    def __init__(self, stream: trio.abc.Stream, *, timeout: float | None = None) -> None:
        self.stream = stream
        self.timeout = timeout
        self.decoder = ReplyDecoder()

    async def send(self, line: str) -> None:
        data = encode_request(Command(line))
        try:
            await self.stream.send_all(data)
        except trio.BrokenResourceError as exc:
            raise CommandClientError(f"connection lost while sending a command: {exc.__cause__ or exc}") from exc

    async def run(self, line: str, on_output: OutputCallback) -> int:
        """Send ``line``, pass its output to ``on_output`` as it comes; its exit status."""
        await self.send(line)
        return await self.receive_reply(on_output)

    async def receive_reply(self, on_output: OutputCallback) -> int:
        """The next reply's output to ``on_output``; its exit status."""
        status: int | None = None
        while True:
            event = await self._next_event()
            if isinstance(event, ReplyHeader):
                status = event.exit_status
            elif isinstance(event, Output):
                on_output(event.stream, event.data)
            elif isinstance(event, ReplyEnd):
                assert status is not None
                return status
            elif isinstance(event, ErrorReply):
                raise CommandClientError(f"the server refused the command: {event.error}: {event.message}")
            else:
                raise CommandClientError("the server closed the connection before replying")

    async def receive_result(self) -> Result:
        """The next reply, gathered in memory."""
        collector = ResultCollector()
        while True:
            event = await self._next_event()
            if isinstance(event, ReplyHeader | Output | ReplyEnd):
                result = collector.add(event)
                if result is not None:
                    return result
            elif isinstance(event, ErrorReply):
                raise CommandClientError(f"the server refused the command: {event.error}: {event.message}")
            else:
                raise CommandClientError("the server closed the connection before replying")

    async def _next_event(self) -> ReplyHeader | Output | ReplyEnd | ErrorReply | ConnectionClosed:
        while True:
            try:
                event = self.decoder.next_event()
            except FrameLengthError as exc:
                hint = ""
                if exc.little_endian_length is not None:
                    swapped = exc.little_endian_length
                    hint = f" (little-endian it reads {swapped}: the server packs it with 'i', not '!I')"
                raise CommandClientError(f"malformed reply from the server: {exc.message}{hint}") from None
            except RemoteProtocolError as exc:
                raise CommandClientError(f"malformed reply from the server: {exc.message}") from None
            except IncompleteStream as exc:
                raise CommandClientError(f"the server closed the connection inside a reply: {exc}") from None
            if event is not NEED_DATA:
                return event
            with trio.move_on_after(self.timeout if self.timeout is not None else float("inf")):
                try:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                except trio.BrokenResourceError as exc:
                    raise CommandClientError(f"connection lost: {exc.__cause__ or exc}") from exc
                self.decoder.receive_data(data)
                continue
            raise CommandClientError(f"no reply from the server for {self.timeout:g} s")


async def run_commands_on(
    stream: trio.abc.Stream,
    lines: Sequence[str],
    *,
    timeout: float | None = None,
    half_close: bool = True,
) -> list[Result]:
    """Pipeline ``lines`` on ``stream`` (written while replies are read); one result each, in order.

    With ``half_close`` the write side is shut after the last command, where the stream can.
    """
    commands = [Command(line) for line in lines]  # invalid lines fail before anything is sent
    session = CommandSession(stream, timeout=timeout)
    results: list[Result] = []

    async def write() -> None:
        try:
            for command in commands:
                await stream.send_all(encode_request(command))
            if half_close and isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the reader says what happened

    # Raised after the nursery, so that callers see the error itself and not a group.
    failure: CommandClientError | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        try:
            while len(results) < len(commands):
                results.append(await session.receive_result())
        except CommandClientError as exc:
            failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return results
