"""Exceptions raised by the TFTP codec, state machines, server and client.

Every exception is a :class:`TftpError` whose ``str()`` is one line, fit to print as
``harness: <message>``. Errors caused by what a peer sent carry ``error_code``: the TFTP
error code (RFC 1350 section 5, RFC 2347) to answer the peer with.
"""

from __future__ import annotations

import enum

__all__ = [
    "DuplicateOptionError",
    "ErrorCode",
    "MalformedOptionsError",
    "MissingTerminatorError",
    "NotAsciiError",
    "OversizedDataError",
    "TftpDecodeError",
    "TftpError",
    "TftpOptionError",
    "TftpProtocolError",
    "TftpRemoteError",
    "TftpTimeoutError",
    "TrailingBytesError",
    "TruncatedPacketError",
    "UnknownOpcodeError",
]


class ErrorCode(enum.IntEnum):
    """TFTP error codes: 0-7 from RFC 1350 section 5, 8 from RFC 2347."""

    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_NEGOTIATION = 8

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    ErrorCode.NOT_DEFINED: "not defined",
    ErrorCode.FILE_NOT_FOUND: "file not found",
    ErrorCode.ACCESS_VIOLATION: "access violation",
    ErrorCode.DISK_FULL: "disk full or allocation exceeded",
    ErrorCode.ILLEGAL_OPERATION: "illegal TFTP operation",
    ErrorCode.UNKNOWN_TID: "unknown transfer ID",
    ErrorCode.FILE_EXISTS: "file already exists",
    ErrorCode.NO_SUCH_USER: "no such user",
    ErrorCode.OPTION_NEGOTIATION: "option negotiation failed",
}


class TftpError(Exception):
    """Base class: a TFTP transfer could not be done. ``str(exc)`` is one line."""


class TftpProtocolError(TftpError):
    """The peer broke the protocol; ``error_code`` is the TFTP code to answer it with."""

    error_code: ErrorCode = ErrorCode.ILLEGAL_OPERATION

    def __init__(self, message: str, *, error_code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if error_code is not None:
            self.error_code = error_code


class TftpOptionError(TftpProtocolError):
    """Option negotiation failed (RFC 2347): answer with ERROR 8."""

    error_code = ErrorCode.OPTION_NEGOTIATION


class TftpDecodeError(TftpProtocolError):
    """A datagram is not a well-formed TFTP packet."""


class TruncatedPacketError(TftpDecodeError):
    """The datagram is shorter than its opcode requires."""


class UnknownOpcodeError(TftpDecodeError):
    """The opcode is not one of RRQ, WRQ, DATA, ACK, ERROR, OACK."""


class MissingTerminatorError(TftpDecodeError):
    """A string field (filename, mode, option, error message) lacks its NUL terminator."""


class NotAsciiError(TftpDecodeError):
    """A filename, mode or option field holds bytes outside 7-bit ASCII."""


class MalformedOptionsError(TftpDecodeError):
    """The option list has an odd number of strings or an empty option name."""


class DuplicateOptionError(TftpDecodeError):
    """The same option name (compared case-insensitively) appears twice."""

    error_code = ErrorCode.OPTION_NEGOTIATION


class OversizedDataError(TftpDecodeError):
    """A DATA payload is longer than the largest block size any negotiation allows."""


class TrailingBytesError(TftpDecodeError):
    """A fixed-size packet (ACK) or NUL-terminated packet (ERROR) is followed by extra bytes."""


class TftpRemoteError(TftpError):
    """The peer sent an ERROR packet."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message
        try:
            name = ErrorCode(code).description
        except ValueError:
            name = "unknown error code"
        super().__init__(f"peer sent ERROR {code} ({name}): {message!r}")


class TftpTimeoutError(TftpError):
    """The peer stopped answering: the retry budget is spent."""
