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
server waits for a command) is disconnected, and connections beyond a cap, in all and per address,
are closed at once (:mod:`harness._kit.admission`).

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

from harness._kit.admission import MAX_CONNECTIONS, MAX_CONNECTIONS_PER_HOST, ConnectionGate
from harness._kit.connections import FramedConnection
from harness._kit.framing import RemoteProtocolError
from harness._kit.tls import open_stream_listeners
from harness.command.builtins import BLOCK, FileOutput, Outcome, OutputSource, run_builtin
from harness.command.wire import (
    ConnectionClosed,
    ErrorReply,
    ReplyHeader,
    RequestDecoder,
    RequestEvent,
    encode_reply_header,
)

logger = logging.getLogger(__name__)

RECEIVE_SIZE = 64 * 1024
DEFAULT_IDLE_TIMEOUT = 30.0
SHELL = "/bin/sh"

Runner = Callable[[str], Awaitable[Outcome]]


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


class CommandConnection(FramedConnection[RequestEvent]):
    """Serves the commands of one client connection, in order."""

    receive_size = RECEIVE_SIZE
    send_timeout_reason = "the client read nothing for {:g} s"

    def __init__(self, stream: trio.abc.Stream, run: Runner, *, idle_timeout: float) -> None:
        super().__init__(stream, logger, idle_timeout=idle_timeout)
        self.run = run
        self.decoder = RequestDecoder()

    def _error_reply(self, exc: RemoteProtocolError) -> bytes:
        return encode_reply_header(ErrorReply(exc.code, exc.message))

    def _silence_reason(self) -> str:
        return f"no command for {self.idle_timeout:g} s"

    async def _serve_requests(self) -> None:
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
    max_connections: int = MAX_CONNECTIONS,
    max_connections_per_host: int = MAX_CONNECTIONS_PER_HOST,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the command protocol until cancelled; ``task_status.started(port)`` once listening.

    ``root`` is the folder ``cat`` reads from (and the shell's working folder with ``shell``).
    Beyond ``max_connections`` at once, or ``max_connections_per_host`` from one address, a
    connection is closed at once.
    """
    root = Path(root)
    runner = partial(run_shell_command if shell else run_builtin_command, root=root)
    listeners, bound_port = await open_stream_listeners(host, port, ssl_context)
    gate = ConnectionGate(logger, max_connections, max_connections_per_host)

    async def handle(stream: trio.abc.Stream) -> None:
        await CommandConnection(stream, runner, idle_timeout=idle_timeout).serve()

    logger.debug("serving command on %s:%d (%s), root %s", host, bound_port, "TLS" if ssl_context else "TCP", root)
    task_status.started(bound_port)
    await trio.serve_listeners(gate.guard(handle), listeners)
