"""The reference ``command`` server: Trio around the sans-IO codec.

Theory of operation
-------------------
One task serves each connection, one command at a time, so replies go out in request order however
the client pipelined; other connections are served meanwhile (a ``sleep`` on one holds up no other).
By default a command line runs as one of :mod:`harness.command.builtins`, in-process; with
``shell=True`` it runs through ``/bin/sh -c`` as the course notes do, its output collected in
temporary files. Either way the output's size is known before it is sent and its bytes go out block
by block: memory per connection is bounded by one receive, one frame and one block, whatever the
output size. A client that stops reading for ``idle_timeout`` seconds (or stops sending while the
server waits for a command) is disconnected.

A malformed frame gets the ``bad_frame`` error header, and the connection is closed; an abrupt
disconnect ends that connection only. The server itself stops only when cancelled.
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import BinaryIO

import trio

from harness._kit.framing import NEED_DATA, IncompleteStream, RemoteProtocolError
from harness._kit.tls import open_stream_listeners
from harness.command.builtins import BLOCK, FileOutput, Outcome, OutputSource, run_builtin
from harness.command.wire import (
    Command,
    ConnectionClosed,
    ErrorReply,
    ReplyHeader,
    RequestDecoder,
    encode_reply_header,
)

logger = logging.getLogger(__name__)

RECEIVE_SIZE = 64 * 1024
DEFAULT_IDLE_TIMEOUT = 30.0
# After a bad_frame reply, read and drop what the client still sends for this long before closing:
# closing a socket with unread data sends a reset, which can destroy the reply before it is read.
LINGER_SECONDS = 2.0
SHELL = "/bin/sh"

Runner = Callable[[str], Awaitable[Outcome]]


class _Hangup(Exception):
    """The client went idle (not sending a command, or not reading a reply)."""


async def run_builtin_command(line: str, *, root: Path) -> Outcome:
    """A built-in command; ``cat`` opens its file in a worker thread."""
    outcome = await trio.to_thread.run_sync(run_builtin, line, root)
    if outcome.sleep:
        await trio.sleep(outcome.sleep)
    return outcome


def _spooled_output(file: BinaryIO) -> FileOutput:
    fd = os.dup(file.fileno())
    # The child moved the shared offset to the end of what it wrote.
    os.lseek(fd, 0, os.SEEK_SET)
    return FileOutput(fd=fd, size=os.fstat(fd).st_size)


async def run_shell_command(line: str, *, root: Path) -> Outcome:
    """``/bin/sh -c LINE`` in ``root``, its output spooled to temporary files (not memory)."""
    files = await trio.to_thread.run_sync(lambda: (tempfile.TemporaryFile(), tempfile.TemporaryFile()))
    with files[0] as out, files[1] as err:
        process = await trio.run_process(
            [SHELL, "-c", line], stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=root, check=False
        )
        status = process.returncode
        if status < 0:  # killed by a signal: a shell reports 128 + its number
            status = 128 + signal.Signals(-status).value
        return Outcome(status, _spooled_output(out), _spooled_output(err))


def _peer_name(stream: trio.abc.Stream) -> str:
    transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if not isinstance(transport, trio.SocketStream):
        return repr(transport)
    try:
        host, port, *_ = transport.socket.getpeername()
    except OSError:
        return "?"
    return f"{host}:{port}"


class CommandConnection:
    """Serves the commands of one client connection, in order."""

    def __init__(self, stream: trio.abc.Stream, run: Runner, *, idle_timeout: float) -> None:
        self.stream = stream
        self.run = run
        self.idle_timeout = idle_timeout
        self.decoder = RequestDecoder()
        self.peer = _peer_name(stream)

    async def serve(self) -> None:
        """Serve until the client is done or breaks the protocol; never raises ``Exception``."""
        try:
            try:
                await self._serve_commands()
            except RemoteProtocolError as exc:
                logger.info("%s: %s: %s", self.peer, exc.code, exc.message)
                await self._send(encode_reply_header(ErrorReply(exc.code, exc.message)))
                await self._drain()
        except _Hangup as exc:
            logger.info("%s: closing: %s", self.peer, exc)
        except IncompleteStream as exc:
            logger.info("%s: %s", self.peer, exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            logger.info("%s: connection lost: %s", self.peer, exc.__cause__ or exc)
        except Exception:
            logger.exception("%s: internal error; closing the connection", self.peer)
        finally:
            # Bounded: a TLS close_notify may wait on a client that reads nothing.
            with trio.move_on_after(LINGER_SECONDS, shield=True):
                try:
                    await self.stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

    async def _serve_commands(self) -> None:
        while True:
            event = await self._next_event()
            if isinstance(event, ConnectionClosed):
                return
            outcome = await self.run(event.line)
            try:
                await self._reply(outcome)
            finally:
                outcome.stdout.close()
                outcome.stderr.close()
            logger.debug("%s: %r: exit status %d", self.peer, event.line, outcome.exit_status)

    async def _next_event(self) -> Command | ConnectionClosed:
        while True:
            event = self.decoder.next_event()
            if event is not NEED_DATA:
                return event
            with trio.move_on_after(self.idle_timeout):
                self.decoder.receive_data(await self.stream.receive_some(RECEIVE_SIZE))
                continue
            raise _Hangup(f"no command for {self.idle_timeout:g} s")

    async def _reply(self, outcome: Outcome) -> None:
        pending = bytearray(
            encode_reply_header(ReplyHeader(outcome.exit_status, outcome.stdout.size, outcome.stderr.size))
        )
        for source in (outcome.stdout, outcome.stderr):
            blocks = source.blocks()
            while (block := await _next_block(source, blocks)) is not None:
                pending += block
                if len(pending) >= BLOCK:
                    await self._send(bytes(pending))
                    pending.clear()
        # Small replies leave in one send: a header alone would make two segments.
        if pending:
            await self._send(bytes(pending))

    async def _send(self, data: bytes) -> None:
        with trio.move_on_after(self.idle_timeout):
            await self.stream.send_all(data)
            return
        raise _Hangup(f"the client read nothing for {self.idle_timeout:g} s")

    async def _drain(self) -> None:
        """After a closing reply: our EOF, then drop the client's bytes for a while (no reset)."""
        with trio.move_on_after(min(LINGER_SECONDS, self.idle_timeout)):
            if isinstance(self.stream, trio.abc.HalfCloseableStream):
                await self.stream.send_eof()
            while await self.stream.receive_some(RECEIVE_SIZE):
                pass


async def _next_block(source: OutputSource, blocks: Iterator[bytes]) -> bytes | None:
    """The next block of ``source`` (from ``blocks``, its iterator), or None at its end."""
    if source.blocking:
        return await trio.to_thread.run_sync(next, blocks, None)
    await trio.lowlevel.checkpoint()
    return next(blocks, None)


async def serve_command(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    root: Path,
    shell: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the command protocol until cancelled; ``task_status.started(port)`` once listening.

    ``root`` is the folder ``cat`` reads from (and the shell's working folder with ``shell``).
    """
    root = Path(root)
    runner = partial(run_shell_command if shell else run_builtin_command, root=root)
    listeners, bound_port = await open_stream_listeners(host, port, ssl_context)

    async def handle(stream: trio.abc.Stream) -> None:
        await CommandConnection(stream, runner, idle_timeout=idle_timeout).serve()

    logger.debug("serving command on %s:%d (%s), root %s", host, bound_port, "TLS" if ssl_context else "TCP", root)
    task_status.started(bound_port)
    await trio.serve_listeners(handle, listeners)
