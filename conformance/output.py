"""The output of a program under test, kept in bounded memory (sans-IO; hosting feeds it).

The output is kept bounded in bytes whatever the program prints (a student's debug loop can print
gigabytes): it is read in chunks, never as whole lines, long lines are cut, and only the tail is
kept. What was cut or dropped is counted and said where the output is shown.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

# Enough of a crashing program's output to show its traceback, not its whole life story.
OUTPUT_LINES_KEPT = 2000
# The most kept at once, in bytes of (cut) lines: the tail of a program that prints without end.
OUTPUT_BYTES_KEPT = 1 << 20
# Longer than any traceback line; a line of megabytes is shown by its start.
LINE_BYTES_KEPT = 4096
# Marks remembered for their byte offsets (one is taken per case); older ones only lose the byte count.
MARKS_REMEMBERED = 64

# A position in the output (a line count) where the suite did something on purpose, and what it did.
Deliberate = tuple[int, str]


def annotate(lines: list[tuple[int, str]], deliberate: Sequence[Deliberate]) -> list[str]:
    """``lines`` (index, text) with a line before the first that came after each deliberate act.

    A client's reset or cut-short request, made on purpose by a case, makes many programs print a
    ConnectionResetError traceback; under a failed case it would pass for the failure itself.
    Acts with no line after them say nothing; an act before every line shown is said at the top.
    """
    said: dict[int, list[str]] = {}
    for position, what in deliberate:
        at = next((i for i, (index, _) in enumerate(lines) if index >= position), None)
        if at is not None and what not in said.setdefault(at, []):
            said[at].append(what)
    shown: list[str] = []
    for i, (_, text) in enumerate(lines):
        for what in said.get(i, ()):
            shown.append(
                f"(after the suite's deliberate {what}: errors about that connection below are expected; "
                "the case checks what the program does next)"
            )
        shown.append(text)
    return shown


@dataclass(frozen=True, slots=True)
class _Line:
    index: int
    # Bytes of output before this line, and the line's own length as printed (newline included).
    offset: int
    size: int
    # Bytes of it kept (after a cut), counted against OUTPUT_BYTES_KEPT.
    kept: int
    text: str


class OutputTail:
    """The last lines of a byte stream, in bounded memory; long lines cut, old lines dropped, both counted.

    Sans-IO: :meth:`feed` it bytes as they come and :meth:`end` it at EOF. Not thread-safe.
    """

    def __init__(
        self,
        *,
        lines_kept: int = OUTPUT_LINES_KEPT,
        bytes_kept: int = OUTPUT_BYTES_KEPT,
        line_bytes: int = LINE_BYTES_KEPT,
    ) -> None:
        self._lines_kept = lines_kept
        self._bytes_kept = bytes_kept
        self._line_bytes = line_bytes
        self._lines: deque[_Line] = deque()
        self._kept_bytes = 0
        self._count = 0
        # Bytes of every complete line so far.
        self._offset = 0
        # The line still being printed: its first line_bytes bytes, and its length so far (no newline).
        self._partial = bytearray()
        self._partial_size = 0
        self._mark_offsets: dict[int, int] = {0: 0}

    @property
    def count(self) -> int:
        """Complete lines so far, dropped ones included."""
        return self._count

    def mark(self) -> int:
        """A position in the output; :meth:`since` returns what came after it."""
        self._mark_offsets[self._count] = self._offset
        while len(self._mark_offsets) > MARKS_REMEMBERED:
            del self._mark_offsets[min(self._mark_offsets)]
        return self._count

    def feed(self, data: bytes) -> None:
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start)
            end = len(data) if newline < 0 else newline
            room = self._line_bytes - len(self._partial)
            if room > 0:
                self._partial += data[start : min(end, start + room)]
            self._partial_size += end - start
            if newline < 0:
                return
            self._finish_line(newline=True)
            start = newline + 1

    def end(self) -> None:
        """The stream ended: a last line without a newline is a line all the same."""
        if self._partial_size:
            self._finish_line(newline=False)

    def since(self, mark: int = 0, *, limit: int = 40, deliberate: Sequence[Deliberate] = ()) -> list[str]:
        """Lines after ``mark``, the last ``limit`` of them, after one saying how many earlier ones are not shown.

        ``deliberate`` acts of the suite (see :func:`annotate`) are said before the lines that followed them.
        """
        entries = [line for line in self._lines if line.index >= mark]
        indexed = [(line.index, line.text) for line in entries]
        sizes = [line.size for line in entries]
        if self._partial_size:
            indexed.append((self._count, self._text(self._partial, self._partial_size) + " ..."))
            sizes.append(self._partial_size)
        first = entries[0] if entries else None
        dropped = (first.index if first else self._count) - mark
        hidden = max(0, len(indexed) - limit)
        shown = annotate(indexed[hidden:], deliberate)
        if dropped > 0:
            head = f"... ({dropped + hidden} earlier lines"
            start = self._mark_offsets.get(mark)
            if start is not None:
                dropped_bytes = (first.offset if first else self._offset) - start + sum(sizes[:hidden])
                head += f", {dropped_bytes} bytes"
            return [head + ", dropped)", *shown]
        if hidden:
            return [f"... ({hidden} earlier lines)", *shown]
        return shown

    def _finish_line(self, *, newline: bool) -> None:
        kept = len(self._partial)
        size = self._partial_size + newline
        self._lines.append(_Line(self._count, self._offset, size, kept, self._text(self._partial, self._partial_size)))
        self._kept_bytes += kept
        self._count += 1
        self._offset += size
        self._partial = bytearray()
        self._partial_size = 0
        while len(self._lines) > self._lines_kept or self._kept_bytes > self._bytes_kept:
            self._kept_bytes -= self._lines.popleft().kept

    def _text(self, kept: bytearray, size: int) -> str:
        text = kept.decode("utf-8", "replace")
        if size > len(kept):
            text += f" ... [line cut: {size - len(kept)} more bytes]"
        return text
