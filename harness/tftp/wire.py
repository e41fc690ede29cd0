"""TFTP packets: frozen dataclasses that validate themselves, and their wire encoding.

Sans-IO: bytes in, packets out (RFC 1350 section 5, OACK from RFC 2347). Every malformed
datagram raises a specific :class:`~harness.tftp.errors.TftpDecodeError` subclass whose
``error_code`` is the TFTP error code to answer with (4, or 8 for a duplicate option).

What the codec does not judge, because it depends on the transfer: whether a DATA payload
fits the negotiated block size, whether a block number is expected, whether an option value
is acceptable. Those belong to :mod:`harness.tftp.options` and :mod:`harness.tftp.machine`.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from harness._kit.kinds import OTHER
from harness.tftp.errors import (
    DuplicateOptionError,
    ErrorCode,
    MalformedOptionsError,
    MissingTerminatorError,
    NotAsciiError,
    OversizedDataError,
    TrailingBytesError,
    TruncatedPacketError,
    UnknownOpcodeError,
)

__all__ = [
    "MAX_BLOCK",
    "MAX_PAYLOAD",
    "Ack",
    "Data",
    "ErrorCode",
    "ErrorPacket",
    "Opcode",
    "OptionAck",
    "OptionList",
    "Packet",
    "ReadRequest",
    "Request",
    "WriteRequest",
    "decode_packet",
    "encode_ack",
    "encode_data",
    "encode_error",
    "option_dict",
]

#: Block numbers are 16-bit unsigned (RFC 1350 section 5).
MAX_BLOCK = 65535
#: The largest blksize RFC 2348 allows; no negotiation can make a longer DATA payload legal.
MAX_PAYLOAD = 65464

#: Options as (name, value) pairs in the order they were sent, spelled as sent.
OptionList: TypeAlias = tuple[tuple[str, str], ...]


class Opcode(enum.IntEnum):
    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6


_HEADER = struct.Struct("!HH")


def _check_string(value: object, what: str, *, allow_empty: bool = True) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str, not {type(value).__name__}")
    if not value.isascii():
        raise ValueError(f"{what} {value!r} is not ASCII")
    if "\0" in value:
        raise ValueError(f"{what} {value!r} contains NUL")
    if not allow_empty and not value:
        raise ValueError(f"{what} must not be empty")


def _check_block(block: object) -> None:
    if not isinstance(block, int) or isinstance(block, bool):
        raise TypeError(f"block number must be int, not {type(block).__name__}")
    if not 0 <= block <= MAX_BLOCK:
        raise ValueError(f"block number {block} is out of range 0-{MAX_BLOCK}")


def _check_options(options: object) -> None:
    if not isinstance(options, tuple):
        raise TypeError("options must be a tuple of (name, value) pairs")
    seen: set[str] = set()
    for pair in options:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"option {pair!r} is not a (name, value) pair")
        name, value = pair
        _check_string(name, "option name", allow_empty=False)
        _check_string(value, f"value of option {name!r}")
        key = name.lower()
        if key in seen:
            raise ValueError(f"option {name!r} appears twice")
        seen.add(key)


def _encode_options(options: OptionList) -> bytes:
    return b"".join(f"{name}\0{value}\0".encode("ascii") for name, value in options)


def option_dict(options: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Options keyed by lower-case name (RFC 2347: names are case-insensitive)."""
    return {name.lower(): value for name, value in options}


@dataclass(frozen=True, slots=True)
class Request:
    """RRQ or WRQ: ``filename``, transfer ``mode`` and RFC 2347 options, all ASCII."""

    opcode: ClassVar[Opcode]
    filename: str
    mode: str
    options: OptionList = ()

    def __post_init__(self) -> None:
        _check_string(self.filename, "filename")
        _check_string(self.mode, "mode")
        _check_options(self.options)

    def encode(self) -> bytes:
        strings = f"{self.filename}\0{self.mode}\0".encode("ascii")
        return self.opcode.to_bytes(2, "big") + strings + _encode_options(self.options)


@dataclass(frozen=True, slots=True)
class ReadRequest(Request):
    opcode: ClassVar[Opcode] = Opcode.RRQ


@dataclass(frozen=True, slots=True)
class WriteRequest(Request):
    opcode: ClassVar[Opcode] = Opcode.WRQ


@dataclass(frozen=True, slots=True)
class Data:
    """DATA: a block number and up to :data:`MAX_PAYLOAD` bytes."""

    opcode: ClassVar[Opcode] = Opcode.DATA
    block: int
    payload: bytes

    def __post_init__(self) -> None:
        _check_block(self.block)
        if not isinstance(self.payload, bytes):
            raise TypeError(f"payload must be bytes, not {type(self.payload).__name__}")
        if len(self.payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(self.payload)} bytes exceeds the maximum {MAX_PAYLOAD}")

    def encode(self) -> bytes:
        return encode_data(self.block, self.payload)


@dataclass(frozen=True, slots=True)
class Ack:
    opcode: ClassVar[Opcode] = Opcode.ACK
    block: int

    def __post_init__(self) -> None:
        _check_block(self.block)

    def encode(self) -> bytes:
        return encode_ack(self.block)


@dataclass(frozen=True, slots=True)
class ErrorPacket:
    """ERROR: a 16-bit code (see :class:`ErrorCode`) and an ASCII message."""

    opcode: ClassVar[Opcode] = Opcode.ERROR
    code: int
    message: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.code, int) or isinstance(self.code, bool):
            raise TypeError(f"error code must be int, not {type(self.code).__name__}")
        if not 0 <= self.code <= 0xFFFF:
            raise ValueError(f"error code {self.code} does not fit in 16 bits")
        _check_string(self.message, "error message")

    def encode(self) -> bytes:
        return encode_error(self.code, self.message)


@dataclass(frozen=True, slots=True)
class OptionAck:
    """OACK (RFC 2347): the options the server accepted, at least one."""

    opcode: ClassVar[Opcode] = Opcode.OACK
    options: OptionList

    def __post_init__(self) -> None:
        _check_options(self.options)
        if not self.options:
            raise ValueError("an OACK must carry at least one option")

    def encode(self) -> bytes:
        return Opcode.OACK.to_bytes(2, "big") + _encode_options(self.options)


Packet: TypeAlias = ReadRequest | WriteRequest | Data | Ack | ErrorPacket | OptionAck


def encode_data(block: int, payload: bytes) -> bytes:
    """DATA datagram without building a :class:`Data` first (the transfer's hot path)."""
    return _HEADER.pack(Opcode.DATA, block) + payload


def encode_ack(block: int) -> bytes:
    return _HEADER.pack(Opcode.ACK, block)


def encode_error(code: int, message: str) -> bytes:
    """ERROR datagram; a non-ASCII message is escaped rather than refused."""
    text = message.replace("\0", " ").encode("ascii", "backslashreplace")
    return _HEADER.pack(Opcode.ERROR, code) + text + b"\0"


# --- decoding -------------------------------------------------------------------------------


def _split_strings(body: bytes, what: str) -> list[str]:
    """Split NUL-terminated ASCII strings; the body must end with NUL."""
    if not body.endswith(b"\0"):
        raise MissingTerminatorError(f"{what}: last string is not NUL-terminated")
    if not body.isascii():
        offset = next(i for i, byte in enumerate(body) if byte > 0x7F)
        raise NotAsciiError(f"{what}: non-ASCII byte 0x{body[offset]:02x} at offset {offset + 2}")
    return body[:-1].decode("ascii").split("\0")


def _pair_options(fields: list[str], what: str) -> OptionList:
    if len(fields) % 2:
        raise MalformedOptionsError(f"{what}: option {fields[-1]!r} has no value")
    pairs = tuple(zip(fields[0::2], fields[1::2], strict=True))
    seen: set[str] = set()
    for name, _ in pairs:
        if not name:
            raise MalformedOptionsError(f"{what}: empty option name")
        key = name.lower()
        if key in seen:
            raise DuplicateOptionError(f"{what}: option {name!r} appears twice")
        seen.add(key)
    return pairs


def _decode_request(datagram: bytes, opcode: int) -> Packet:
    what = Opcode(opcode).name
    body = datagram[2:]
    if b"\0" not in body:
        raise MissingTerminatorError(f"{what}: filename is not NUL-terminated")
    fields = _split_strings(body, what)
    if len(fields) < 2:
        raise TruncatedPacketError(f"{what}: no transfer mode after filename {fields[0]!r}")
    options = _pair_options(fields[2:], what)
    cls = ReadRequest if opcode == Opcode.RRQ else WriteRequest
    return cls(fields[0], fields[1], options)


def _decode_data(datagram: bytes, opcode: int) -> Packet:
    if len(datagram) < 4:
        raise TruncatedPacketError(f"DATA of {len(datagram)} bytes has no block number")
    payload = datagram[4:]
    if len(payload) > MAX_PAYLOAD:
        raise OversizedDataError(f"DATA payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return Data(int.from_bytes(datagram[2:4], "big"), payload)


def _decode_ack(datagram: bytes, opcode: int) -> Packet:
    if len(datagram) < 4:
        raise TruncatedPacketError(f"ACK of {len(datagram)} bytes has no block number")
    if len(datagram) > 4:
        raise TrailingBytesError(f"ACK has {len(datagram) - 4} bytes after the block number")
    return Ack(int.from_bytes(datagram[2:4], "big"))


def _decode_error(datagram: bytes, opcode: int) -> Packet:
    if len(datagram) < 4:
        raise TruncatedPacketError(f"ERROR of {len(datagram)} bytes has no error code")
    body = datagram[4:]
    end = body.find(b"\0")
    if end < 0:
        raise MissingTerminatorError("ERROR: message is not NUL-terminated")
    if end != len(body) - 1:
        raise TrailingBytesError(f"ERROR has {len(body) - end - 1} bytes after its message")
    # The message is only shown to people, so odd bytes are escaped rather than refused.
    message = body[:end].decode("ascii", "backslashreplace")
    return ErrorPacket(int.from_bytes(datagram[2:4], "big"), message)


def _decode_oack(datagram: bytes, opcode: int) -> Packet:
    body = datagram[2:]
    if not body:
        raise MalformedOptionsError("OACK carries no options")
    return OptionAck(_pair_options(_split_strings(body, "OACK"), "OACK"))


_DECODERS: dict[int, Callable[[bytes, int], Packet]] = {
    Opcode.RRQ: _decode_request,
    Opcode.WRQ: _decode_request,
    Opcode.DATA: _decode_data,
    Opcode.ACK: _decode_ack,
    Opcode.ERROR: _decode_error,
    Opcode.OACK: _decode_oack,
}


def decode_packet(datagram: bytes) -> Packet:
    """Decode one datagram; raise a :class:`TftpDecodeError` subclass if it is malformed."""
    if len(datagram) < 2:
        raise TruncatedPacketError(f"datagram of {len(datagram)} bytes is too short for an opcode")
    opcode = (datagram[0] << 8) | datagram[1]
    decoder = _DECODERS.get(opcode)
    if decoder is None:
        raise UnknownOpcodeError(f"unknown opcode {opcode}")
    return decoder(datagram, opcode)


#: What :func:`classify` names a datagram, by opcode (RFC 1350 section 5, RFC 2347 for OACK).
KINDS: tuple[str, ...] = tuple(opcode.name.lower() for opcode in Opcode)


def classify(payload: bytes) -> str:
    """Name a TFTP datagram by its 2-byte big-endian opcode, for the UDP relay's rules."""
    if len(payload) < 2:
        return OTHER
    try:
        return Opcode(int.from_bytes(payload[:2], "big")).name.lower()
    except ValueError:
        return OTHER
