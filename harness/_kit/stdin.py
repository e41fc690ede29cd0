"""Reading a command's standard input from Trio, for the clients that send what is typed."""

from __future__ import annotations

import os

import trio

__all__ = ["READ_SIZE", "LineReader", "read_chunk"]

#: Bytes asked of one ``os.read``: a pipe's whole buffer at once.
READ_SIZE = 65536


async def read_chunk(fd: int) -> bytes:
    """What ``fd`` has, up to :data:`READ_SIZE` bytes; b"" at end of input.

    ``os.read`` in a worker thread that is abandoned on cancellation: stdin may be a terminal that
    must stay blocking for the shell (trio's FdStream would make it non-blocking), and the raw fd
    rather than ``sys.stdin``, because a thread blocked inside a buffered reader holds its lock at
    interpreter exit, which aborts Python.
    """
    return await trio.to_thread.run_sync(os.read, fd, READ_SIZE, abandon_on_cancel=True)


class LineReader:
    """Lines from a file descriptor (see :func:`read_chunk`)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""
        self._eof = False

    async def read_line(self) -> bytes:
        """The next line with its newline; the unterminated rest at end of input; then b""."""
        while b"\n" not in self._buffer and not self._eof:
            chunk = await read_chunk(self._fd)
            self._buffer += chunk
            self._eof = not chunk
        line, newline, self._buffer = self._buffer.partition(b"\n")
        return line + newline
