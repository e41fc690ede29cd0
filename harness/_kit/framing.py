"""Length-prefixed frames over a byte stream (sans-IO), shared by the framed protocols.

A frame is a 4-byte unsigned big-endian length L (1 <= L <= 65536), then L bytes. The protocols
differ in what the bytes mean (a JSON header, a command line) and in what follows a frame; they
share this module's :class:`Buffer`, the length check, and one error hierarchy, as in h11:
:class:`LocalProtocolError` (we were about to send something invalid) and
:class:`RemoteProtocolError` (the peer sent something invalid), each carrying the protocol's error
code that answers it.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeAlias, TypeVar

# The length prefix: 4 bytes, unsigned, big-endian (network order).
LENGTH_PREFIX = struct.Struct(">I")
MIN_FRAME_LENGTH = 1
# Small enough that a peer may hold one whole frame in memory, large enough for any header.
MAX_FRAME_LENGTH = 65536
#: The error code of a frame that cannot be read (length out of range, body not what it must be).
BAD_FRAME = "bad_frame"


class ProtocolError(Exception):
    """A protocol violation, with the error code (a string) that answers it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.code)!r}, {self.message!r})"


class LocalProtocolError(ProtocolError):
    """We tried to build or send something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow; answer with ``code``."""


class FrameLengthError(RemoteProtocolError):
    """A frame length outside 1-65536; ``length`` is the value read, ``prefix`` its four bytes."""

    def __init__(self, length: int, prefix: bytes) -> None:
        super().__init__(BAD_FRAME, f"frame length {length} is outside {MIN_FRAME_LENGTH}-{MAX_FRAME_LENGTH}")
        self.length = length
        self.prefix = prefix

    @property
    def little_endian_length(self) -> int | None:
        """The length these bytes give read little-endian, when that one is in range: the likely intent."""
        return byte_swapped_length(self.length)


def byte_swapped_length(length: int) -> int | None:
    """``length`` with its four bytes reversed, when that is a valid frame length and ``length`` is not.

    A peer that packs the length with ``struct.pack("i", n)`` (native order: little-endian on x86 and
    ARM) sends 100 as ``64 00 00 00``, which reads big-endian as 1677721600.
    """
    if MIN_FRAME_LENGTH <= length <= MAX_FRAME_LENGTH or not 0 <= length < 1 << 32:
        return None
    swapped = int.from_bytes(length.to_bytes(4, "big"), "little")
    return swapped if MIN_FRAME_LENGTH <= swapped <= MAX_FRAME_LENGTH else None


class IncompleteStream(Exception):
    """The peer's stream ended inside a frame (or what follows one). There is nothing to answer."""


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


#: What a decoder's ``next_event()`` returns when it needs more bytes.
NEED_DATA: Literal[_NeedData.NEED_DATA] = _NeedData.NEED_DATA
NeedData: TypeAlias = Literal[_NeedData.NEED_DATA]


class Buffer:
    """Received bytes, consumed tentatively, then committed or rolled back (as wsproto's Buffer).

    A frame is parsed by consuming its parts; if one is incomplete the parser rolls back and waits
    for more data, so a frame split at any byte parses the same as a whole one.
    """

    def __init__(self, initial: bytes = b"") -> None:
        self._data = bytearray(initial)
        self._used = 0

    def feed(self, data: bytes | bytearray) -> None:
        self._data += data

    def consume_at_most(self, nbytes: int) -> bytes:
        data = bytes(self._data[self._used : self._used + nbytes])
        self._used += len(data)
        return data

    def consume_exactly(self, nbytes: int) -> bytes | None:
        if len(self._data) - self._used < nbytes:
            return None
        return self.consume_at_most(nbytes)

    def commit(self) -> None:
        del self._data[: self._used]
        self._used = 0

    def rollback(self) -> None:
        self._used = 0

    def __len__(self) -> int:
        """Bytes not yet consumed."""
        return len(self._data) - self._used


def frame(body: bytes) -> bytes:
    """``body`` behind its length prefix; :class:`LocalProtocolError` when its length is out of range."""
    if not MIN_FRAME_LENGTH <= len(body) <= MAX_FRAME_LENGTH:
        raise LocalProtocolError(
            BAD_FRAME, f"frame of {len(body)} bytes is outside {MIN_FRAME_LENGTH}-{MAX_FRAME_LENGTH}"
        )
    return LENGTH_PREFIX.pack(len(body)) + body


def read_frame(buffer: Buffer) -> bytes | None:
    """One whole frame's body from ``buffer`` (committed), or ``None`` (rolled back) if incomplete."""
    prefix = buffer.consume_exactly(LENGTH_PREFIX.size)
    if prefix is None:
        buffer.rollback()
        return None
    (length,) = LENGTH_PREFIX.unpack(prefix)
    # Checked before the body arrives, so a huge length is refused without waiting for it.
    if not MIN_FRAME_LENGTH <= length <= MAX_FRAME_LENGTH:
        raise FrameLengthError(length, bytes(prefix))
    body = buffer.consume_exactly(length)
    if body is None:
        buffer.rollback()
        return None
    buffer.commit()
    return body


@dataclass(frozen=True, slots=True)
class SuccessReply:
    """The base of a protocol's successful replies: ``ok`` tells them from an :class:`ErrorReply`."""

    ok: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A refused request, ``{"error": ..., "message": ...}``; ``error`` is kept as sent, so that
    unknown codes can be reported."""

    ok: ClassVar[bool] = False
    #: The error code of a reply whose fields are not strings.
    invalid_code: ClassVar[str] = BAD_FRAME
    error: str
    message: str

    def __post_init__(self) -> None:
        for name in ("error", "message"):
            if not isinstance(getattr(self, name), str):
                raise LocalProtocolError(self.invalid_code, f"{name} must be a string")


def encode_json_frame(header: Mapping[str, object]) -> bytes:
    """Frame a JSON object: length prefix plus compact UTF-8 JSON (non-ASCII sent as UTF-8)."""
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate has no UTF-8 form; JSON's \u escapes can still carry it.
        body = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("ascii")
    return frame(body)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A frame's body as a JSON object, or :class:`RemoteProtocolError` ``bad_frame``."""
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise RemoteProtocolError(BAD_FRAME, "frame body is not valid UTF-8") from None
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, NaN/Infinity and over-long integers.
        raise RemoteProtocolError(BAD_FRAME, f"frame body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RemoteProtocolError(BAD_FRAME, f"frame body is a JSON {type(value).__name__}, not an object")
    return value


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer ended its stream cleanly, between two requests or replies."""


EventT = TypeVar("EventT")
StateT = TypeVar("StateT", bound=enum.Enum)


class FrameDecoder(Generic[EventT, StateT]):
    """What the framed protocols' decoders share: feeding, EOF, staying broken, reading whole frames.

    A subclass gives its own state enum (the states ``start``, ``closed`` and ``broken`` name three
    of them) and ``_extract()``, which turns buffered bytes into one event, usually by way of
    ``_next_frame()``.
    """

    def __init__(self, start: StateT, *, closed: StateT, broken: StateT) -> None:
        self._buffer = Buffer()
        self._state = start
        self._closed_state = closed
        self._broken_state = broken
        self._eof = False
        self._error: RemoteProtocolError | IncompleteStream | None = None

    @property
    def state(self) -> StateT:
        return self._state

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events."""
        return len(self._buffer)

    def receive_data(self, data: bytes | bytearray) -> None:
        """Feed bytes from the peer; ``b""`` means the peer ended its stream."""
        if self._eof and data:
            raise RuntimeError("received data after EOF")
        if data:
            self._buffer.feed(data)
        else:
            self._eof = True

    def next_event(self) -> EventT | NeedData:
        if self._error is not None:
            raise self._error
        try:
            return self._extract()
        except (RemoteProtocolError, IncompleteStream) as exc:
            self._state = self._broken_state
            self._error = exc
            raise

    def events(self) -> Iterator[EventT]:
        """``next_event()`` until it needs data or has reported :class:`ConnectionClosed`."""
        while True:
            event = self.next_event()
            if event is NEED_DATA:
                return
            yield event
            if isinstance(event, ConnectionClosed):
                return

    def _next_frame(self) -> bytes | ConnectionClosed | NeedData:
        """The next whole frame's body; :class:`ConnectionClosed` once the stream ended between frames."""
        if self._state is self._closed_state:
            return ConnectionClosed()
        if not len(self._buffer):
            if self._eof:
                self._state = self._closed_state
                return ConnectionClosed()
            return NEED_DATA
        body = read_frame(self._buffer)
        if body is not None:
            return body
        if self._eof:
            raise IncompleteStream(f"stream ended inside a frame ({len(self._buffer)} bytes of it)")
        return NEED_DATA

    def _extract(self) -> EventT | NeedData:
        raise NotImplementedError
