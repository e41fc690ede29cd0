"""The suite's side of the command protocol: fixture files, requests, and replies read in full.

Cases speak the wire format themselves rather than through the reference client, so that they can
send what a good client never would (lengths out of range, bodies that are not UTF-8) and cut the
byte stream wherever they like. Replies go through the same sans-IO
:class:`~harness.command.wire.ReplyDecoder` as the reference client's; a reply it rejects is the
target's fault, reported with the bytes that came and, where the bytes say so, why (raw output with
no header, a length in little-endian byte order).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import trio

from conformance.context import CaseContext
from conformance.kit.reply_streams import ReplyStream
from conformance.vocabulary import CaseFailed
from harness._kit.framing import (
    LENGTH_PREFIX,
    FrameLengthError,
)
from harness.command.wire import (
    ConnectionClosed,
    ErrorReply,
    Output,
    ReplyDecoder,
    ReplyEnd,
    ReplyEvent,
    ReplyHeader,
    Result,
    ResultCollector,
    encode_request,
)

SPEC = "command wire format"
# A reply to a quick command, after its last byte was sent: generous for a loaded machine, short
# enough that a silent server fails each case within a few seconds.
REPLY_SECONDS = 2.0
# Without progress for this long, a server that should be reading our bytes has stopped.
SEND_SECONDS = 5.0
RECEIVE_SIZE = 65536
# No case asks for more output than a few MiB; a header announcing more is the server's mistake,
# and the suite does not read on.
REPLY_LIMIT = 16 << 20
# How long to read a connection the server broke, to show what it said before.
LAST_WORDS_SECONDS = 0.5

# The files ``conformance fixtures command DIR`` writes, which cases cat.
HELLO_FILE = "hello.txt"
HELLO_CONTENT = b"hello from the command fixture\n"
BINARY_FILE = "all-bytes.bin"
# Every byte value, up and down, several times: NUL, CR, LF, 0x80-0xff, invalid UTF-8 throughout.
BINARY_CONTENT = (bytes(range(256)) + bytes(range(255, -1, -1))) * 8
FIXTURE_FILES = {HELLO_FILE: HELLO_CONTENT, BINARY_FILE: BINARY_CONTENT}


def write_fixtures(directory: Path) -> None:
    """Write the files the cases cat into ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in FIXTURE_FILES.items():
        temp = directory / f".{name}.part"
        temp.write_bytes(content)
        os.replace(temp, directory / name)


def request(line: str) -> bytes:
    return encode_request(line)


def raw_frame(body: bytes) -> bytes:
    """A frame around any body, valid UTF-8 or not."""
    return LENGTH_PREFIX.pack(len(body)) + body


def seq_output(first: int, last: int) -> bytes:
    return "".join(f"{n}\n" for n in range(first, last + 1)).encode("ascii")


def show_result(result: Result | ErrorReply) -> str:
    if isinstance(result, ErrorReply):
        return f'{{"error": "{result.error}", "message": {result.message!r}}}'
    return (
        f"exit status {result.exit_status}, stdout {_clip(result.stdout)} ({len(result.stdout)} bytes), "
        f"stderr {_clip(result.stderr)} ({len(result.stderr)} bytes)"
    )


def _clip(data: bytes) -> str:
    return repr(data) if len(data) <= 60 else f"{data[:40]!r}...{data[-12:]!r}"


@dataclass(frozen=True)
class Expected:
    """What a reply must hold; ``stderr=None`` asks for some stderr, any (an error message)."""

    exit_status: int | None
    stdout: bytes
    stderr: bytes | None = b""

    def describe(self) -> str:
        status = "a non-zero exit status" if self.exit_status is None else f"exit status {self.exit_status}"
        stderr = "a message on stderr" if self.stderr is None else f"stderr {_clip(self.stderr)}"
        return f"{status}, stdout {_clip(self.stdout)} ({len(self.stdout)} bytes), {stderr}"


def expect_result(reply: Result | ErrorReply, expected: Expected, *, after: str) -> Result:
    if isinstance(reply, ErrorReply):
        raise CaseFailed(
            f"{after} was refused with {reply.error}", expected=expected.describe(), actual=show_result(reply)
        )
    problems = []
    if expected.exit_status is None:
        if reply.exit_status == 0:
            problems.append("the exit status is 0, where the command failed")
    elif reply.exit_status != expected.exit_status:
        problems.append(f"the exit status is {reply.exit_status}, not {expected.exit_status}")
    if reply.stdout != expected.stdout:
        if expected.stdout and expected.stdout in reply.stdout + reply.stderr and reply.stdout != expected.stdout:
            problems.append("stdout and stderr are mixed up or joined")
        else:
            problems.append(_output_difference("stdout", expected.stdout, reply.stdout))
    if expected.stderr is None:
        if not reply.stderr:
            problems.append("stderr is empty, where the command's error message belongs")
        elif reply.stdout.endswith(reply.stderr) and reply.stdout:
            problems.append("the error message is on stdout too")
    elif reply.stderr != expected.stderr:
        problems.append(_output_difference("stderr", expected.stderr, reply.stderr))
    if problems:
        raise CaseFailed(
            f"{after}: {problems[0]}",
            expected=expected.describe(),
            actual=show_result(reply),
            details="\n".join(problems[1:]) or None,
        )
    return reply


def _output_difference(name: str, expected: bytes, actual: bytes) -> str:
    if len(actual) != len(expected):
        return f"{name} is {len(actual)} bytes, not {len(expected)}"
    offset = next(i for i, (a, b) in enumerate(zip(actual, expected, strict=True)) if a != b)
    return (
        f"{name} differs from byte {offset} on ({actual[offset : offset + 8]!r}, not {expected[offset : offset + 8]!r})"
    )


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__
    if isinstance(cause, OSError):
        return cause.strerror or repr(cause)
    return str(cause or exc)


class Conversation(ReplyStream[ReplyEvent]):
    """One connection to the target: send bytes, read whole replies in order, expect the end.

    ``receive_size`` and ``pause`` make a slow reader: each read takes at most that many bytes and
    is followed by that pause (a deliberate observation window).
    """

    # _receive turns a broken connection into a failure; expect_close takes it for an end.
    abrupt_ends = (CaseFailed,)
    connection_closed = ConnectionClosed

    def __init__(self, ctx: CaseContext, stream: trio.abc.Stream) -> None:
        super().__init__(ctx, stream)
        self.replies = 0
        self.receive_size = RECEIVE_SIZE
        self.pause = 0.0

    def _new_decoder(self) -> ReplyDecoder:
        return ReplyDecoder()

    async def send(self, data: bytes, *, what: str) -> None:
        """Send all of ``data``; fail when the server stops reading for SEND_SECONDS or hangs up."""
        with self.ctx.deadline(SEND_SECONDS, f"sending {what} ({len(data)} bytes; the server stopped reading)"):
            try:
                await self.stream.send_all(data)
                return
            except trio.BrokenResourceError as exc:
                failure = exc
        summary = f"the server closed the connection ({_reason(failure)}) while the client was sending {what}"
        raise CaseFailed(summary + (f", after {self.replies} replies" if self.replies else ", without a reply"))

    async def reply(self, doing: str, *, idle: float = REPLY_SECONDS) -> Result | ErrorReply:
        """The next whole reply; fail on EOF, a malformed reply, or ``idle`` seconds without a byte."""
        collector = ResultCollector()
        # Output bytes the header announced, and how many came: to tell a cut reply from silence.
        announced: int | None = None
        got = 0
        while True:
            event = self._next_event(doing)
            if isinstance(event, ConnectionClosed):
                raise CaseFailed(
                    f"the server closed the connection instead of replying {doing}, after {self.replies} replies",
                    actual=self._shown() or None,
                )
            if isinstance(event, ErrorReply):
                self.replies += 1
                return event
            if isinstance(event, ReplyHeader) and event.stdout_size + event.stderr_size > REPLY_LIMIT:
                raise CaseFailed(
                    f"the reply {doing} announces {event.stdout_size} bytes of stdout and {event.stderr_size} of "
                    "stderr, far more than the command gives",
                    actual=self._shown(),
                )
            if isinstance(event, ReplyHeader):
                announced, got = event.stdout_size + event.stderr_size, 0
            if isinstance(event, Output):
                got += len(event.data)
            if isinstance(event, ReplyHeader | Output | ReplyEnd):
                result = collector.add(event)
                if result is not None:
                    self.replies += 1
                    return result
                continue
            if not await self._receive(idle, doing):
                summary = f"no reply within {self.ctx.seconds(idle):.1f} s {doing}"
                if announced is not None:
                    summary = (
                        f"the reply {doing} stopped after {got} of the {announced} output bytes its header "
                        f"announced (nothing more for {self.ctx.seconds(idle):.1f} s): the rest was never sent "
                        "(a send() whose return value is ignored, instead of sendall()?)"
                    )
                elif self.decoder.buffered:
                    summary += " (a reply header was started but never finished)"
                raise CaseFailed(summary, actual=self._shown() or None)

    def _not_closed(self, event: ReplyEvent, doing: str) -> CaseFailed:
        return CaseFailed(f"the server sent more {doing}, where it should close the connection", actual=self._shown())

    def _length_failure(self, error: FrameLengthError, doing: str) -> CaseFailed:
        return CaseFailed(
            f"malformed reply {doing}: {error.message}", actual=self._shown(), details=_length_hint(error)
        )

    async def _receive(self, idle: float, doing: str) -> bool:
        """Feed the decoder what arrives; False after ``idle`` seconds without anything."""
        with trio.move_on_after(self.ctx.seconds(idle)):
            try:
                data = await self.stream.receive_some(self.receive_size)
            except trio.BrokenResourceError as exc:
                raise CaseFailed(
                    f"the connection broke ({_reason(exc)}) {doing}, after {self.replies} replies",
                    actual=self._shown() or None,
                ) from None
            self._feed(data)
            if self.pause and data:
                await trio.sleep(self.ctx.seconds(self.pause))
            return True
        return False


def _length_hint(exc: FrameLengthError) -> str | None:
    swapped = exc.little_endian_length
    if swapped is not None:
        return (
            f"its length prefix {exc.prefix.hex(' ')} reads big-endian as {exc.length}, but little-endian as "
            f"{swapped}: the server packs the length in little-endian (native) byte order, as struct.pack('i', n) "
            "does on x86 and ARM; the protocol's is big-endian, struct.pack('!I', n) (command wire format §1)"
        )
    if all(32 <= byte < 127 or byte in b"\t\r\n" for byte in exc.prefix):
        return (
            f"the reply starts with text ({exc.prefix!r}), not a length: the server sends the command's output raw, "
            "as the course notes' first version does; a reply is a 4-byte length, a JSON header, then the output "
            "(command wire format §3)"
        )
    return None
