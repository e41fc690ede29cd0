"""Sans-IO codec for the ``upload`` protocol: bytes in, events out. No sockets, clocks or files.

Theory of operation
-------------------
Both directions carry frames: a 4-byte unsigned big-endian length L (1 <= L <= 65536), then L bytes
of a UTF-8 JSON object. A put request frame is followed by exactly ``file_size`` raw body bytes, which
are not framed.

:class:`RequestDecoder` (server side) turns the client's byte stream into events::

    PutHeader, BodyChunk*, BodyEnd   a put; BodyEnd follows PutHeader at once when file_size is 0
    StatRequest                      a stat
    ConnectionClosed                 the client shut its write side between two requests

:class:`ReplyDecoder` (client side) turns the server's byte stream into :class:`FileInfo` and
:class:`ErrorReply` events, then :class:`ConnectionClosed`.

As in h11, the caller feeds bytes with ``receive_data()`` (``b""`` means EOF) and calls
``next_event()`` until it returns :data:`NEED_DATA`. Frames are parsed from a :class:`Buffer` that
commits what a complete frame used and rolls back a partial one, so input may be split at any byte.
Body bytes are handed out as soon as they arrive and never accumulated: memory stays bounded by one
frame plus what the caller fed at once.

Errors: a decoder raises :class:`RemoteProtocolError` carrying the :class:`ErrorCode` to answer with,
and :class:`IncompleteStream` for EOF inside a frame or a body (nothing to answer: discard and close).
Building an invalid event raises :class:`LocalProtocolError`. A decoder that raised stays broken and
raises the same error again.
"""

from __future__ import annotations

import enum
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias, TypeVar

from harness._kit import framing
from harness._kit.framing import (
    NEED_DATA,
    FrameDecoder,
    IncompleteStream,
    LocalProtocolError,
    NeedData,
    RemoteProtocolError,
    SuccessReply,
    encode_json_frame,
    parse_json_object,
)
from harness._kit.framing import ConnectionClosed as ConnectionClosed
from harness.upload.names import file_name_problem

_HEX_DIGITS = frozenset(string.hexdigits)


class ErrorCode(enum.StrEnum):
    """The ``error`` values of a failure reply."""

    BAD_FRAME = "bad_frame"
    BAD_HEADER = "bad_header"
    BAD_NAME = "bad_name"
    TOO_LARGE = "too_large"
    DIGEST_MISMATCH = "digest_mismatch"
    NOT_FOUND = "not_found"


# After these the server replies and then closes: it can no longer tell where the next request
# starts (a bad frame or header) or will not read the body (a bad name, too large).
CLOSING_ERROR_CODES = frozenset({ErrorCode.BAD_FRAME, ErrorCode.BAD_HEADER, ErrorCode.BAD_NAME, ErrorCode.TOO_LARGE})


def closes_connection(code: str) -> bool:
    """Whether a server closes the connection after replying with error ``code``."""
    return code in CLOSING_ERROR_CODES


# --- events ----------------------------------------------------------------------------------------


def _require(condition: bool, code: ErrorCode, message: str) -> None:
    if not condition:
        raise LocalProtocolError(code, message)


def _is_int(value: object) -> bool:
    # bool is a subclass of int, but JSON true is not a size.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_md5(md5: object) -> None:
    _require(isinstance(md5, str), ErrorCode.BAD_HEADER, "md5 must be a string")
    assert isinstance(md5, str)
    _require(
        len(md5) == 32 and all(c in _HEX_DIGITS for c in md5),
        ErrorCode.BAD_HEADER,
        "md5 must be 32 hexadecimal digits",
    )


def _check_size(file_size: object) -> None:
    _require(_is_int(file_size), ErrorCode.BAD_HEADER, "file_size must be an integer")
    assert isinstance(file_size, int)
    _require(file_size >= 0, ErrorCode.BAD_HEADER, "file_size must not be negative")


def check_file_name(file_name: object) -> None:
    """Raise :class:`LocalProtocolError` (``bad_header`` or ``bad_name``) unless it is a valid name."""
    _require(isinstance(file_name, str), ErrorCode.BAD_HEADER, "file_name must be a string")
    assert isinstance(file_name, str)
    problem = file_name_problem(file_name)
    _require(problem is None, ErrorCode.BAD_NAME, problem or "")


@dataclass(frozen=True, slots=True)
class PutHeader:
    """``{"op": "put", ...}``; exactly ``file_size`` body bytes follow it."""

    file_name: str
    file_size: int
    md5: str

    def __post_init__(self) -> None:
        # Shape before name, so that a header with both kinds of fault is a bad_header.
        _require(isinstance(self.file_name, str), ErrorCode.BAD_HEADER, "file_name must be a string")
        _check_size(self.file_size)
        _check_md5(self.md5)
        check_file_name(self.file_name)


@dataclass(frozen=True, slots=True)
class StatRequest:
    """``{"op": "stat", "file_name": ...}``."""

    file_name: str

    def __post_init__(self) -> None:
        check_file_name(self.file_name)


@dataclass(frozen=True, slots=True)
class BodyChunk:
    """Some of the body of the current put, as it arrived (never empty)."""

    data: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes) or not self.data:
            raise LocalProtocolError(ErrorCode.BAD_FRAME, "a body chunk must be non-empty bytes")


@dataclass(frozen=True, slots=True)
class BodyEnd:
    """The current put's body is complete."""


@dataclass(frozen=True, slots=True)
class FileInfo(SuccessReply):
    """A successful put or stat: what the server stores under ``file_name``."""

    file_name: str
    file_size: int
    md5: str

    def __post_init__(self) -> None:
        _require(isinstance(self.file_name, str), ErrorCode.BAD_HEADER, "file_name must be a string")
        _check_size(self.file_size)
        _check_md5(self.md5)


@dataclass(frozen=True, slots=True)
class ErrorReply(framing.ErrorReply):
    """A failed request."""

    invalid_code: ClassVar[str] = ErrorCode.BAD_HEADER

    @property
    def closes_connection(self) -> bool:
        return closes_connection(self.error)


Request: TypeAlias = PutHeader | StatRequest
Reply: TypeAlias = FileInfo | ErrorReply
RequestEvent: TypeAlias = PutHeader | BodyChunk | BodyEnd | StatRequest | ConnectionClosed
ReplyEvent: TypeAlias = FileInfo | ErrorReply | ConnectionClosed


# --- encoding --------------------------------------------------------------------------------------


def request_header(request: Request) -> dict[str, object]:
    if isinstance(request, PutHeader):
        return {
            "op": "put",
            "file_name": request.file_name,
            "file_size": request.file_size,
            "md5": request.md5,
        }
    return {"op": "stat", "file_name": request.file_name}


def reply_header(reply: Reply) -> dict[str, object]:
    if isinstance(reply, FileInfo):
        return {"ok": True, "file_name": reply.file_name, "file_size": reply.file_size, "md5": reply.md5}
    return {"ok": False, "error": reply.error, "message": reply.message}


def encode_request(request: Request) -> bytes:
    """The frame for a put header (its body bytes are sent after it, raw) or a stat."""
    return encode_json_frame(request_header(request))


def encode_reply(reply: Reply) -> bytes:
    return encode_json_frame(reply_header(reply))


# --- decoding --------------------------------------------------------------------------------------


def _field(header: Mapping[str, Any], key: str) -> Any:
    if key not in header:
        raise RemoteProtocolError(ErrorCode.BAD_HEADER, f"header has no {key!r} field")
    return header[key]


def _as_remote(exc: LocalProtocolError) -> RemoteProtocolError:
    # The same fault is ours when we build an event and the peer's when we decode one.
    return RemoteProtocolError(exc.code, exc.message)


def request_from_header(header: Mapping[str, Any]) -> Request:
    """Interpret a decoded request frame; extra keys are ignored."""
    op = _field(header, "op")
    if not isinstance(op, str):
        raise RemoteProtocolError(ErrorCode.BAD_HEADER, "op must be a string")
    try:
        if op == "put":
            return PutHeader(_field(header, "file_name"), _field(header, "file_size"), _field(header, "md5"))
        if op == "stat":
            return StatRequest(_field(header, "file_name"))
    except LocalProtocolError as exc:
        raise _as_remote(exc) from None
    raise RemoteProtocolError(ErrorCode.BAD_HEADER, f"unknown op {op!r}")


def reply_from_header(header: Mapping[str, Any]) -> Reply:
    """Interpret a decoded reply frame; extra keys are ignored."""
    ok = _field(header, "ok")
    if not isinstance(ok, bool):
        raise RemoteProtocolError(ErrorCode.BAD_HEADER, "ok must be true or false")
    try:
        if ok:
            return FileInfo(_field(header, "file_name"), _field(header, "file_size"), _field(header, "md5"))
        return ErrorReply(_field(header, "error"), _field(header, "message"))
    except LocalProtocolError as exc:
        raise _as_remote(exc) from None


class DecoderState(enum.Enum):
    HEADER = "HEADER"  # expecting a frame
    BODY = "BODY"  # inside a put body
    CLOSED = "CLOSED"  # the peer ended its stream cleanly
    ERROR = "ERROR"  # the peer broke the protocol; nothing more is decoded


# Which event may follow in which state, and the state it leads to. The two directions share it:
# replies never enter BODY.
_TRANSITIONS: dict[tuple[DecoderState, type], DecoderState] = {
    (DecoderState.HEADER, PutHeader): DecoderState.BODY,
    (DecoderState.HEADER, StatRequest): DecoderState.HEADER,
    (DecoderState.HEADER, FileInfo): DecoderState.HEADER,
    (DecoderState.HEADER, ErrorReply): DecoderState.HEADER,
    (DecoderState.HEADER, ConnectionClosed): DecoderState.CLOSED,
    (DecoderState.BODY, BodyChunk): DecoderState.BODY,
    (DecoderState.BODY, BodyEnd): DecoderState.HEADER,
    (DecoderState.CLOSED, ConnectionClosed): DecoderState.CLOSED,
}


EventT = TypeVar("EventT", RequestEvent, ReplyEvent)


class _Decoder(FrameDecoder[EventT, DecoderState]):
    def __init__(self) -> None:
        super().__init__(DecoderState.HEADER, closed=DecoderState.CLOSED, broken=DecoderState.ERROR)
        self._body_remaining = 0

    def _transition(self, event: EventT) -> None:
        try:
            self._state = _TRANSITIONS[self._state, type(event)]
        except KeyError:
            raise RuntimeError(f"{type(event).__name__} is not allowed in state {self._state.name}") from None
        if isinstance(event, PutHeader):
            self._body_remaining = event.file_size

    def _extract(self) -> EventT | NeedData:
        event: EventT | NeedData
        if self._state is DecoderState.BODY:
            event = self._extract_body()
        else:
            body = self._next_frame()
            event = self._interpret(parse_json_object(body)) if isinstance(body, bytes) else body
        if event is not NEED_DATA:
            self._transition(event)
        return event

    def _extract_body(self) -> EventT | NeedData:
        raise NotImplementedError

    def _interpret(self, frame: dict[str, Any]) -> EventT:
        raise NotImplementedError


class RequestDecoder(_Decoder[RequestEvent]):
    """Server side: the client's byte stream as requests and body chunks."""

    def __init__(self) -> None:
        super().__init__()
        # Body bytes that arrived while the buffer was empty, kept as they came: a large upload
        # then passes through without being copied into and out of the buffer.
        self._direct: bytes | None = None

    @property
    def body_remaining(self) -> int:
        """Body bytes of the current put still to come (0 outside a body)."""
        return self._body_remaining

    @property
    def buffered(self) -> int:
        return len(self._buffer) + (len(self._direct) if self._direct is not None else 0)

    def receive_data(self, data: bytes | bytearray) -> None:
        if (
            data
            and not self._eof
            and self._state is DecoderState.BODY
            and self._direct is None
            and not len(self._buffer)
            and len(data) <= self._body_remaining
        ):
            self._direct = bytes(data)
        else:
            super().receive_data(data)

    def _interpret(self, frame: dict[str, Any]) -> RequestEvent:
        return request_from_header(frame)

    def _extract_body(self) -> RequestEvent | NeedData:
        if self._body_remaining == 0:
            return BodyEnd()
        if self._direct is not None:
            # It arrived before anything now in the buffer, and fits in the body.
            data, self._direct = self._direct, None
        else:
            data = self._buffer.consume_at_most(self._body_remaining)
            self._buffer.commit()
        if data:
            self._body_remaining -= len(data)
            return BodyChunk(data)
        if self._eof:
            raise IncompleteStream(f"stream ended with {self._body_remaining} body bytes missing")
        return NEED_DATA


class ReplyDecoder(_Decoder[ReplyEvent]):
    """Client side: the server's byte stream as replies."""

    def _interpret(self, frame: dict[str, Any]) -> ReplyEvent:
        return reply_from_header(frame)
