"""The commands the reference server runs itself, without a shell: ``echo``, ``seq``, ``cat``,
``true``, ``false``, ``sleep``; anything else is "not found" (exit status 127).

Each means what it means under a POSIX shell for the arguments the suite sends, so a student's
server that runs real commands through ``/bin/sh -c`` answers the same. A command's standard output
is an :class:`OutputSource`: its size is known before its first byte (the reply header comes first)
and its bytes are produced block by block, so that ``seq 1 100000000`` or a large ``cat`` never sit
in memory whole. Nothing here blocks except :meth:`FileOutput.blocks`, which reads the file: call it
from a worker thread.
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness.command.wire import NOT_FOUND_STATUS

# Output is produced and sent in blocks of about this size: large enough that per-block costs
# vanish, small next to the memory a connection may hold.
BLOCK = 256 * 1024
# A sleep longer than this is refused: the reference must not hold a connection for hours.
MAX_SLEEP_SECONDS = 600.0
# A shell reports a command line it cannot parse with status 2.
SYNTAX_ERROR_STATUS = 2


class OutputSource:
    """Bytes whose total size is known up front, produced in blocks (none, here)."""

    size: int = 0
    #: Whether producing a block may block (file reads): then it is done in a worker thread.
    blocking: bool = False

    def blocks(self) -> Iterator[bytes]:
        return iter(())

    def close(self) -> None:
        """Release what the source holds, whether or not its blocks were all taken."""


@dataclass
class BytesOutput(OutputSource):
    data: bytes = b""

    def __post_init__(self) -> None:
        self.size = len(self.data)

    def blocks(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), BLOCK):
            yield self.data[start : start + BLOCK]


def _decimal_width_total(first: int, last: int) -> int:
    """Bytes of ``str(n)`` for n in first..last (0 <= first <= last), counted by digit bands."""
    total = 0
    digits = len(str(first))
    low = first
    while low <= last:
        band_end = min(last, 10**digits - 1)
        total += (band_end - low + 1) * digits
        low = band_end + 1
        digits += 1
    return total


def seq_size(first: int, last: int) -> int:
    """The length of ``seq first last``'s output, without producing it."""
    if first > last:
        return 0
    lines = last - first + 1
    total = lines  # the newlines
    if first < 0:
        # -n is one byte longer than n.
        neg_last = min(last, -1)
        total += _decimal_width_total(-neg_last, -first) + (neg_last - first + 1)
    if last >= 0:
        total += _decimal_width_total(max(first, 0), last)
    return total


@dataclass
class SeqOutput(OutputSource):
    first: int = 1
    last: int = 0

    def __post_init__(self) -> None:
        self.size = seq_size(self.first, self.last)

    def blocks(self) -> Iterator[bytes]:
        # About BLOCK bytes per block, whatever the width of the numbers.
        step = max(1, BLOCK // (len(str(max(abs(self.first), abs(self.last)))) + 2))
        for start in range(self.first, self.last + 1, step):
            stop = min(self.last, start + step - 1)
            yield ("\n".join(map(str, range(start, stop + 1))) + "\n").encode("ascii")


@dataclass
class FileOutput(OutputSource):
    """A file's bytes, its size taken when it was opened. Reading blocks: use a worker thread."""

    fd: int = -1
    size: int = 0
    blocking: bool = True
    _closed: bool = field(default=False, repr=False)

    def blocks(self) -> Iterator[bytes]:
        remaining = self.size
        try:
            while remaining > 0:
                block = os.read(self.fd, min(BLOCK, remaining))
                if not block:
                    # The file shrank since it was opened: the header promised ``size`` bytes, and
                    # the stream must stay readable, so the rest is padded.
                    block = bytes(min(BLOCK, remaining))
                remaining -= len(block)
                yield block
        finally:
            self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.fd)


@dataclass
class Outcome:
    """What running a command line gives: exit status, stdout, stderr, and a pause before replying."""

    exit_status: int
    stdout: OutputSource = field(default_factory=OutputSource)
    stderr: OutputSource = field(default_factory=OutputSource)
    sleep: float = 0.0


def _failed(status: int, message: str) -> Outcome:
    """An outcome with no output and ``message`` (a line) on stderr."""
    return Outcome(status, stderr=BytesOutput((message + "\n").encode("utf-8", "surrogateescape")))


def _echo(args: list[str], root: Path) -> Outcome:
    return Outcome(0, BytesOutput((" ".join(args) + "\n").encode("utf-8", "surrogateescape")))


def _true(args: list[str], root: Path) -> Outcome:
    return Outcome(0)


def _false(args: list[str], root: Path) -> Outcome:
    return Outcome(1)


def _seq(args: list[str], root: Path) -> Outcome:
    if not 1 <= len(args) <= 2:
        return _failed(1, "seq: usage: seq [FIRST] LAST")
    numbers = []
    for arg in args:
        try:
            numbers.append(int(arg))
        except ValueError:
            return _failed(1, f"seq: invalid argument: {arg!r}")
    first, last = (1, numbers[0]) if len(numbers) == 1 else (numbers[0], numbers[1])
    return Outcome(0, SeqOutput(first=first, last=last))


def _sleep(args: list[str], root: Path) -> Outcome:
    if len(args) != 1:
        return _failed(1, "sleep: usage: sleep SECONDS")
    try:
        seconds = float(args[0])
    except ValueError:
        return _failed(1, f"sleep: invalid time interval {args[0]!r}")
    if not 0 <= seconds <= MAX_SLEEP_SECONDS:
        return _failed(1, f"sleep: {args[0]}: must be 0 to {MAX_SLEEP_SECONDS:g} seconds here")
    return Outcome(0, sleep=seconds)


def open_under_root(root: Path, name: str) -> FileOutput:
    """``name`` opened for reading, if it lies under ``root`` (no ``..``, no absolute path, no link
    out); OSError with a strerror otherwise."""
    real_root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(real_root, name))
    if os.path.isabs(name) or os.path.commonpath([real_root, path]) != real_root:
        raise PermissionError(13, "Permission denied (outside the served folder)")
    # O_NONBLOCK: a FIFO under the root must not hang the server.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        os.close(fd)
        raise IsADirectoryError(21, "Is a directory")
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise PermissionError(13, "Not a regular file")
    return FileOutput(fd=fd, size=info.st_size)


def _cat(args: list[str], root: Path) -> Outcome:
    if len(args) != 1:
        # Several files would need several sources; the suite only ever sends one.
        return _failed(1, "cat: this server's cat takes exactly one FILE")
    try:
        output = open_under_root(root, args[0])
    except OSError as exc:
        return _failed(1, f"cat: {args[0]}: {exc.strerror or exc}")
    return Outcome(0, output)


BUILTINS: dict[str, Callable[[list[str], Path], Outcome]] = {
    "echo": _echo,
    "seq": _seq,
    "cat": _cat,
    "true": _true,
    "false": _false,
    "sleep": _sleep,
}


def run_builtin(line: str, root: Path) -> Outcome:
    """Run ``line`` as one of the built-in commands (``cat`` opens its file here, a quick call)."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        return _failed(SYNTAX_ERROR_STATUS, f"syntax error: {exc}")
    if not words:
        return Outcome(0)  # an empty line, as in a shell
    name, args = words[0], words[1:]
    builtin = BUILTINS.get(name)
    if builtin is None:
        return _failed(
            NOT_FOUND_STATUS, f"{name}: command not found (this server runs only {', '.join(sorted(BUILTINS))})"
        )
    return builtin(args, root)
