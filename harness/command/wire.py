"""Sans-IO codec for the ``command`` protocol: bytes in, events out. No sockets, clocks or processes.

Theory of operation
-------------------
A request is one frame (:mod:`harness._kit.framing`): a 4-byte big-endian length L (1 <= L <= 65536),
then L bytes of a UTF-8 command line. A reply is a frame holding a JSON header
``{"exit_status": int, "stdout_size": N, "stderr_size": M}``, then N bytes of standard output and M
bytes of standard error, raw. A bad request frame is answered with the header
``{"error": "bad_frame", "message": str}`` and no output, and the server closes.

:class:`RequestDecoder` (server side) turns the client's byte stream into :class:`Command` events,
then :class:`ConnectionClosed`. :class:`ReplyDecoder` (client side) turns the server's into::

    ReplyHeader, Output*, ReplyEnd      one command's reply; Output chunks of stdout, then of stderr
    ErrorReply                          a refused frame (the server then closes)
    ConnectionClosed                    the server ended its stream between two replies

As in h11, the caller feeds bytes with ``receive_data()`` (``b""`` means EOF) and calls
``next_event()`` until it returns :data:`NEED_DATA`. Frames are parsed from a :class:`Buffer` that
commits a complete frame and rolls back a partial one, so input may be split at any byte. Output
bytes are handed out as they arrive, never accumulated: a decoder holds at most one frame plus what
the caller fed at once, whatever the output size.

A decoder raises :class:`RemoteProtocolError` (code ``bad_frame``) for a malformed frame and
:class:`IncompleteStream` for EOF inside a frame or an output; one that raised stays broken and
raises the same error again. Building an invalid event raises :class:`LocalProtocolError`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar

from harness._kit.framing import (
    BAD_FRAME,
    NEED_DATA,
    FrameDecoder,
    IncompleteStream,
    LocalProtocolError,
    NeedData,
    RemoteProtocolError,
    SuccessReply,
    encode_json_frame,
    frame,
    parse_json_object,
)
from harness._kit.framing import ConnectionClosed as ConnectionClosed
from harness._kit.framing import ErrorReply as ErrorReply

#: Exit status of a command the server does not know, as POSIX shells report it.
NOT_FOUND_STATUS = 127

StreamName: TypeAlias = Literal["stdout", "stderr"]


def _is_int(value: object) -> bool:
    # bool is a subclass of int, but JSON true is not a status or a size.
    return isinstance(value, int) and not isinstance(value, bool)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise LocalProtocolError(BAD_FRAME, message)


# --- events ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """A command line, as the client typed it."""

    line: str

    def __post_init__(self) -> None:
        _require(isinstance(self.line, str), "a command line must be a string")
        try:
            encoded = self.line.encode("utf-8")
        except UnicodeEncodeError:
            raise LocalProtocolError(BAD_FRAME, "a command line must be valid UTF-8") from None
        _require(1 <= len(encoded) <= 65536, f"a command line must be 1-65536 bytes of UTF-8, not {len(encoded)}")


@dataclass(frozen=True, slots=True)
class ReplyHeader(SuccessReply):
    """The start of a reply: the command's exit status and how many output bytes follow."""

    exit_status: int
    stdout_size: int
    stderr_size: int

    def __post_init__(self) -> None:
        _require(_is_int(self.exit_status), "exit_status must be an integer")
        for name in ("stdout_size", "stderr_size"):
            size = getattr(self, name)
            _require(_is_int(size) and size >= 0, f"{name} must be an integer >= 0")


@dataclass(frozen=True, slots=True)
class Output:
    """Some output bytes of the current reply, as they arrived (never empty)."""

    stream: StreamName
    data: bytes

    def __post_init__(self) -> None:
        _require(self.stream in ("stdout", "stderr"), "stream must be stdout or stderr")
        _require(isinstance(self.data, bytes) and bool(self.data), "an output chunk must be non-empty bytes")


@dataclass(frozen=True, slots=True)
class ReplyEnd:
    """The current reply's output is complete."""


@dataclass(frozen=True, slots=True)
class Result:
    """A whole reply, gathered: for callers that want the output in memory (small outputs)."""

    exit_status: int
    stdout: bytes
    stderr: bytes

    def header(self) -> ReplyHeader:
        return ReplyHeader(self.exit_status, len(self.stdout), len(self.stderr))


RequestEvent: TypeAlias = Command | ConnectionClosed
ReplyEvent: TypeAlias = ReplyHeader | Output | ReplyEnd | ErrorReply | ConnectionClosed


# --- encoding --------------------------------------------------------------------------------------


def encode_request(command: Command | str) -> bytes:
    """The frame of one command line."""
    if isinstance(command, str):
        command = Command(command)
    return frame(command.line.encode("utf-8"))


def reply_header_fields(header: ReplyHeader | ErrorReply) -> dict[str, object]:
    if isinstance(header, ErrorReply):
        return {"error": header.error, "message": header.message}
    return {"exit_status": header.exit_status, "stdout_size": header.stdout_size, "stderr_size": header.stderr_size}


def encode_reply_header(header: ReplyHeader | ErrorReply) -> bytes:
    """The header frame; a :class:`ReplyHeader`'s output bytes are sent after it, raw."""
    return encode_json_frame(reply_header_fields(header))


def encode_result(result: Result) -> bytes:
    """A whole reply: header, stdout, stderr."""
    return encode_reply_header(result.header()) + result.stdout + result.stderr


# --- decoding --------------------------------------------------------------------------------------


def command_from_body(body: bytes) -> Command:
    """A request frame's body as a command line; ``bad_frame`` unless it is UTF-8."""
    try:
        line = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(BAD_FRAME, f"the command line is not valid UTF-8 (byte {exc.start})") from None
    return Command(line)


def _field(header: Mapping[str, Any], key: str) -> Any:
    if key not in header:
        raise RemoteProtocolError(BAD_FRAME, f"reply header has no {key!r} field")
    return header[key]


def reply_from_header(header: Mapping[str, Any]) -> ReplyHeader | ErrorReply:
    """Interpret a decoded reply header; extra keys are ignored."""
    try:
        if "error" in header:
            return ErrorReply(header["error"], _field(header, "message"))
        return ReplyHeader(_field(header, "exit_status"), _field(header, "stdout_size"), _field(header, "stderr_size"))
    except LocalProtocolError as exc:
        raise RemoteProtocolError(exc.code, exc.message) from None


class DecoderState(enum.Enum):
    FRAME = "FRAME"  # expecting a frame
    STDOUT = "STDOUT"  # inside a reply's stdout
    STDERR = "STDERR"  # inside a reply's stderr
    CLOSED = "CLOSED"  # the peer ended its stream cleanly
    ERROR = "ERROR"  # the peer broke the protocol; nothing more is decoded


EventT = TypeVar("EventT", RequestEvent, ReplyEvent)


class _Decoder(FrameDecoder[EventT, DecoderState]):
    def __init__(self) -> None:
        super().__init__(DecoderState.FRAME, closed=DecoderState.CLOSED, broken=DecoderState.ERROR)


class RequestDecoder(_Decoder[RequestEvent]):
    """Server side: the client's byte stream as command lines."""

    def _extract(self) -> RequestEvent | NeedData:
        body = self._next_frame()
        if isinstance(body, bytes):
            return command_from_body(body)
        return body


class ReplyDecoder(_Decoder[ReplyEvent]):
    """Client side: the server's byte stream as reply headers, output chunks and reply ends."""

    def __init__(self) -> None:
        super().__init__()
        self._stdout_remaining = 0
        self._stderr_remaining = 0

    def _extract(self) -> ReplyEvent | NeedData:
        if self._state is DecoderState.STDOUT:
            if self._stdout_remaining:
                return self._output("stdout")
            self._state = DecoderState.STDERR
        if self._state is DecoderState.STDERR:
            if self._stderr_remaining:
                return self._output("stderr")
            self._state = DecoderState.FRAME
            return ReplyEnd()
        body = self._next_frame()
        if not isinstance(body, bytes):
            return body
        header = reply_from_header(parse_json_object(body))
        if isinstance(header, ReplyHeader):
            self._stdout_remaining, self._stderr_remaining = header.stdout_size, header.stderr_size
            self._state = DecoderState.STDOUT
        return header

    def _output(self, stream: StreamName) -> Output | NeedData:
        remaining = self._stdout_remaining if stream == "stdout" else self._stderr_remaining
        data = self._buffer.consume_at_most(remaining)
        self._buffer.commit()
        if not data:
            if self._eof:
                raise IncompleteStream(f"stream ended with {remaining} bytes of {stream} missing")
            return NEED_DATA
        if stream == "stdout":
            self._stdout_remaining -= len(data)
        else:
            self._stderr_remaining -= len(data)
        return Output(stream, data)


class ResultCollector:
    """Gathers a :class:`ReplyDecoder`'s events into whole :class:`Result` objects (small outputs)."""

    def __init__(self) -> None:
        self._header: ReplyHeader | None = None
        self._parts: dict[StreamName, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}

    def add(self, event: ReplyHeader | Output | ReplyEnd) -> Result | None:
        """Take one event; the whole result once its :class:`ReplyEnd` came, else None."""
        if isinstance(event, ReplyHeader):
            self._header = event
        elif isinstance(event, Output):
            self._parts[event.stream] += event.data
        else:
            assert self._header is not None
            result = Result(self._header.exit_status, bytes(self._parts["stdout"]), bytes(self._parts["stderr"]))
            self._header = None
            self._parts = {"stdout": bytearray(), "stderr": bytearray()}
            return result
        return None
