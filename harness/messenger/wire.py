"""The messenger datagram, shared by the chat room and the broadcast presence protocols.

Wire format (IP Messenger / Feiq style, the contract students are graded against)::

    version:packet_no:user:host:command:extra

- The first five ``:`` separate the fields; ``extra`` is the rest and may contain ``:``.
- ``version`` is exactly ``1``.
- ``packet_no`` is a decimal number chosen by the sender, unique per sender.
- ``user`` and ``host`` are non-empty and contain no ``:``.
- ``command`` is decimal: the low 8 bits are the command, the higher bits are flags.
- The text is UTF-8; a datagram that is not valid UTF-8 is decoded as GB18030 (the encoding of
  the course's GB2312 examples). We always encode UTF-8 unless told otherwise.

Choices made here where the issue leaves room (documented in ``docs/``):

- A datagram longer than :data:`MAX_DATAGRAM_SIZE` (8192) bytes is rejected with
  :class:`DatagramTooLong`, on both decode and encode. 8192 is the size the protocol promises to
  carry; receivers read ``MAX_DATAGRAM_SIZE + 1`` bytes so that a longer datagram is detected
  instead of being silently truncated.
- ``packet_no`` and the command number are ASCII digits only (no sign, no spaces, no Unicode
  digits), at most :data:`MAX_NUMBER_DIGITS` digits. Leading zeros are accepted (``007`` is 7).
- ``extra`` is kept exactly as received, including trailing NULs or newlines.

This module is sans-IO: it never touches sockets, clocks or files.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

from harness._kit.kinds import OTHER

__all__ = [
    "MAX_DATAGRAM_SIZE",
    "MAX_NUMBER_DIGITS",
    "SENDCHECKOPT",
    "VERSION",
    "BadCommand",
    "BadName",
    "BadPacketNumber",
    "BadVersion",
    "Command",
    "Datagram",
    "DatagramError",
    "DatagramTooLong",
    "UndecodableDatagram",
    "UnencodableText",
    "WrongFieldCount",
    "decode",
    "encode",
    "field_safe",
]

VERSION = 1

# The largest datagram the protocol promises to carry (the issue: "datagrams up to 8192 bytes
# must work"). Well below the 65507-byte UDP limit, and a common receive-buffer size in course code.
MAX_DATAGRAM_SIZE = 8192

# Enough for any 64-bit number; also keeps int() far from Python's 4300-digit conversion limit.
MAX_NUMBER_DIGITS = 20

# Flag bit meaning "acknowledge this" (RECVMSG with the packet_no in extra).
SENDCHECKOPT = 0x100

_COMMAND_MASK = 0xFF
_MAX_NUMBER = 10**MAX_NUMBER_DIGITS - 1
_NUMBER = re.compile(f"[0-9]{{1,{MAX_NUMBER_DIGITS}}}")
_FIELD_COUNT = 6


class Command(enum.IntEnum):
    """The command numbers (low 8 bits of the command field) that the course protocols use."""

    BR_ENTRY = 1
    BR_EXIT = 2
    ANSENTRY = 3
    SENDMSG = 0x20
    RECVMSG = 0x21


class DatagramError(ValueError):
    """A datagram that breaks the wire format. Receivers ignore it; senders have a bug."""


class WrongFieldCount(DatagramError):
    """Fewer than six ``:``-separated fields."""


class BadVersion(DatagramError):
    """The version field is not ``1``."""


class BadPacketNumber(DatagramError):
    """The packet number is not a decimal number of at most 20 ASCII digits."""


class BadCommand(DatagramError):
    """The command field is not decimal, or the command/flags values are out of range."""


class BadName(DatagramError):
    """``user`` or ``host`` is empty or contains ``:``."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class UndecodableDatagram(DatagramError):
    """The bytes are neither UTF-8 nor GB18030."""


class UnencodableText(DatagramError):
    """A field holds text that cannot be encoded (lone surrogates, or characters outside the encoding)."""


class DatagramTooLong(DatagramError):
    """The datagram is longer than :data:`MAX_DATAGRAM_SIZE` bytes."""

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message)
        self.size = size


@dataclass(frozen=True, slots=True)
class Datagram:
    """One messenger datagram. ``command`` is the low 8 bits, ``flags`` the bits above them."""

    version: int
    packet_no: int
    user: str
    host: str
    command: int
    flags: int = 0
    extra: str = ""

    def __post_init__(self) -> None:
        if self.version != VERSION:
            raise BadVersion(f"version is {self.version!r}, must be {VERSION}")
        if not 0 <= self.packet_no <= _MAX_NUMBER:
            raise BadPacketNumber(f"packet_no {self.packet_no} is not in 0..{_MAX_NUMBER}")
        for field in ("user", "host"):
            value = getattr(self, field)
            if not value:
                raise BadName(f"{field} is empty", field=field)
            if ":" in value:
                raise BadName(f"{field} {value!r} contains ':'", field=field)
        if not 0 <= self.command <= _COMMAND_MASK:
            raise BadCommand(f"command {self.command} is not in 0..255 (flags go in 'flags')")
        if self.flags < 0 or self.flags & _COMMAND_MASK or self.command | self.flags > _MAX_NUMBER:
            raise BadCommand(f"flags {self.flags:#x} must be bits above the low 8, at most 20 digits")
        for field in ("user", "host", "extra"):
            try:
                getattr(self, field).encode("utf-8")
            except UnicodeEncodeError as exc:
                raise UnencodableText(f"{field} cannot be encoded: {exc}") from None

    @property
    def command_field(self) -> int:
        """The number as it appears on the wire: command and flags together."""
        return self.command | self.flags

    @property
    def wants_ack(self) -> bool:
        return bool(self.flags & SENDCHECKOPT)


def encode(datagram: Datagram, *, encoding: str = "utf-8") -> bytes:
    """Serialize; ``encoding="gb18030"`` produces what the course's GB2312 examples send."""
    text = (
        f"{datagram.version}:{datagram.packet_no}:{datagram.user}:{datagram.host}:"
        f"{datagram.command_field}:{datagram.extra}"
    )
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError as exc:
        raise UnencodableText(f"cannot encode as {encoding}: {exc}") from None
    if len(data) > MAX_DATAGRAM_SIZE:
        raise DatagramTooLong(f"datagram is {len(data)} bytes, more than {MAX_DATAGRAM_SIZE}", size=len(data))
    return data


def decode(data: bytes) -> Datagram:
    """Parse one datagram; raise a specific :class:`DatagramError` subclass when it is malformed."""
    if len(data) > MAX_DATAGRAM_SIZE:
        raise DatagramTooLong(f"datagram is {len(data)} bytes, more than {MAX_DATAGRAM_SIZE}", size=len(data))
    text = _decode_text(data)
    fields = text.split(":", _FIELD_COUNT - 1)
    if len(fields) != _FIELD_COUNT:
        raise WrongFieldCount(f"{len(fields)} fields, need {_FIELD_COUNT} (version:packet_no:user:host:command:extra)")
    version, packet_no, user, host, command, extra = fields
    if version != str(VERSION):
        raise BadVersion(f"version {version[:20]!r} is not {VERSION}")
    if not _NUMBER.fullmatch(packet_no):
        raise BadPacketNumber(f"packet_no {packet_no[:30]!r} is not a decimal number")
    if not _NUMBER.fullmatch(command):
        raise BadCommand(f"command {command[:30]!r} is not a decimal number")
    number = int(command)
    return Datagram(
        version=VERSION,
        packet_no=int(packet_no),
        user=user,
        host=host,
        command=number & _COMMAND_MASK,
        flags=number & ~_COMMAND_MASK,
        extra=extra,
    )


def field_safe(text: str, *, fallback: str) -> str:
    """Make ``text`` usable as ``user`` or ``host``: no ``:``, not empty (e.g. a machine's host name)."""
    cleaned = text.replace(":", "-").encode("utf-8", "replace").decode("utf-8")
    return cleaned or fallback


def _decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError as exc:
        raise UndecodableDatagram(f"neither UTF-8 nor GB18030: {exc.reason} at byte {exc.start}") from None


#: What :func:`classify` names a datagram, by its command's low 8 bits.
_KIND_BY_COMMAND: Mapping[int, str] = {1: "entry", 2: "exit", 3: "ansentry", 32: "sendmsg", 33: "recvmsg"}
KINDS: tuple[str, ...] = tuple(_KIND_BY_COMMAND.values())

# Only ASCII digits: int() alone would also take "+32", " 32" and "3_2".
_DECIMAL = re.compile(r"[0-9]+")


def classify(payload: bytes) -> str:
    """Name a ``version:packet_no:user:host:command:extra`` datagram by its command's low 8 bits.

    Looser than :func:`decode` on purpose: the UDP relay names what students' programs send too.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        try:
            # The course's GB2312 examples send GB18030-compatible text.
            text = payload.decode("gb18030")
        except UnicodeDecodeError:
            return OTHER
    fields = text.split(":", 5)
    if len(fields) != 6 or not _DECIMAL.fullmatch(fields[4]):
        return OTHER
    return _KIND_BY_COMMAND.get(int(fields[4]) & 0xFF, OTHER)
