"""TFTP options (RFC 2347): blksize (2348), timeout and tsize (2349), windowsize (7440).

Sans-IO. The server side is :func:`negotiate`, the client side :func:`request_options` and
:func:`accept_oack`. Option names and values are case-insensitive; values are decimal.

Server rule, documented here because the RFCs leave the choice open: an option the server
does not know, or whose value is not a decimal number in its RFC range, is left out of the
OACK and the transfer goes on with the default for it. No ERROR 8 is sent for a request.

==========  ============  =====================================================================
option      valid range   server answer
==========  ============  =====================================================================
blksize     8-65464       min(request, server maximum)
timeout     1-255         the request itself (RFC 2349: the OACK value must equal it)
tsize       >= 0          RRQ: the file size (octet mode only; unknown in netascii, left out);
                          WRQ: the request echoed
windowsize  1-65535       min(request, what fits in :data:`MAX_WINDOW_BYTES` at that blksize)
==========  ============  =====================================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from harness.tftp.errors import TftpOptionError
from harness.tftp.wire import OptionList

__all__ = [
    "BLKSIZE_RANGE",
    "DEFAULT_BLKSIZE",
    "MAX_WINDOW_BYTES",
    "TIMEOUT_RANGE",
    "WINDOWSIZE_RANGE",
    "Negotiation",
    "TransferOptions",
    "accept_oack",
    "negotiate",
    "parse_number",
    "request_options",
]

DEFAULT_BLKSIZE = 512
BLKSIZE_RANGE = range(8, 65464 + 1)
TIMEOUT_RANGE = range(1, 255 + 1)
WINDOWSIZE_RANGE = range(1, 65535 + 1)
#: A sender keeps a whole window in memory for retransmission and resends it from any ACK inside
#: it (RFC 7440 section 4), so a window's size is both memory per transfer and the data one 4-byte
#: ACK can make the server send. The server caps windowsize so that a window never holds more than
#: this (RFC 7440 lets it answer a smaller value). At 16 MiB one transfer peaked at 112 MiB and 101
#: ACKs drew 1.7 GB; 1 MiB is still 16 blocks of 65464 bytes, or 718 of 1460, far past the point
#: where larger windows stop paying off on a LAN.
MAX_WINDOW_BYTES = 1024 * 1024
#: Longest value we parse; bounds the work a hostile request can cause.
_MAX_DIGITS = 20

_RANGES = {"blksize": BLKSIZE_RANGE, "timeout": TIMEOUT_RANGE, "windowsize": WINDOWSIZE_RANGE}


@dataclass(frozen=True, slots=True)
class TransferOptions:
    """The options in force for one transfer; defaults for those not negotiated."""

    blksize: int = DEFAULT_BLKSIZE
    windowsize: int = 1
    #: Negotiated retransmission timeout in seconds, or None to use the local default.
    timeout: int | None = None
    #: Transfer size announced by the peer (RFC 2349), if any.
    tsize: int | None = None

    def __post_init__(self) -> None:
        if self.blksize not in BLKSIZE_RANGE:
            raise ValueError(f"blksize {self.blksize} is out of range 8-65464")
        if self.windowsize not in WINDOWSIZE_RANGE:
            raise ValueError(f"windowsize {self.windowsize} is out of range 1-65535")
        if self.timeout is not None and self.timeout not in TIMEOUT_RANGE:
            raise ValueError(f"timeout {self.timeout} is out of range 1-255")
        if self.tsize is not None and self.tsize < 0:
            raise ValueError(f"tsize {self.tsize} is negative")


@dataclass(frozen=True, slots=True)
class Negotiation:
    """What the server agreed to: the options in force and the OACK that says so."""

    options: TransferOptions
    #: Options for the OACK, in the client's order, names lower-case; empty means no OACK.
    oack: OptionList
    #: Requested options left out, as ``name=value`` strings, for logging.
    ignored: tuple[str, ...]


def parse_number(value: str) -> int | None:
    """A non-negative decimal option value, or None if it is not one."""
    if not value or len(value) > _MAX_DIGITS or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def negotiate(
    requested: Iterable[tuple[str, str]],
    *,
    is_read: bool,
    file_size: int | None,
    max_blksize: int = BLKSIZE_RANGE.stop - 1,
) -> Negotiation:
    """The server's answer to the options of a request (see the module docstring for the rule).

    ``file_size`` is the size to announce for tsize on a read, None when unknown.
    """
    accepted: dict[str, int] = {}  # in the client's order
    ignored: list[str] = []
    for raw_name, raw_value in requested:
        name = raw_name.lower()
        number = parse_number(raw_value)
        answer: int | None = None
        if name in _RANGES:
            if number is not None and number in _RANGES[name]:
                answer = number
        elif name == "tsize" and number is not None:
            answer = number if not is_read else file_size
        if answer is None or name in accepted:
            ignored.append(f"{raw_name}={raw_value}")
            continue
        accepted[name] = answer
    if "blksize" in accepted:
        accepted["blksize"] = min(accepted["blksize"], max_blksize)
    if "windowsize" in accepted:
        blksize = accepted.get("blksize", DEFAULT_BLKSIZE)
        accepted["windowsize"] = min(accepted["windowsize"], max(1, MAX_WINDOW_BYTES // blksize))
    options = TransferOptions(
        blksize=accepted.get("blksize", DEFAULT_BLKSIZE),
        windowsize=accepted.get("windowsize", 1),
        timeout=accepted.get("timeout"),
        tsize=accepted.get("tsize"),
    )
    oack = tuple((name, str(value)) for name, value in accepted.items())
    return Negotiation(options=options, oack=oack, ignored=tuple(ignored))


def request_options(
    *,
    blksize: int | None = None,
    windowsize: int | None = None,
    timeout: int | None = None,
    tsize: int | None = None,
) -> OptionList:
    """Options for a client's request; None leaves an option out. Ranges are checked."""
    pairs: list[tuple[str, str]] = []
    for name, value in (("blksize", blksize), ("timeout", timeout), ("windowsize", windowsize)):
        if value is not None:
            if value not in _RANGES[name]:
                valid = _RANGES[name]
                raise ValueError(f"{name} {value} is out of range {valid.start}-{valid.stop - 1}")
            pairs.append((name, str(value)))
    if tsize is not None:
        if tsize < 0:
            raise ValueError(f"tsize {tsize} is negative")
        pairs.append(("tsize", str(tsize)))
    return tuple(pairs)


def accept_oack(requested: Iterable[tuple[str, str]], oack: Iterable[tuple[str, str]]) -> TransferOptions:
    """The client's check of an OACK against its request (RFC 2347-2349, 7440).

    Raises :class:`TftpOptionError` (answer ERROR 8) for an option that was not requested or
    a value the RFCs do not allow as an answer: blksize above the request, timeout different
    from it, windowsize above it.
    """
    asked = {name.lower(): value for name, value in requested}
    got: dict[str, int] = {}
    for raw_name, raw_value in oack:
        name = raw_name.lower()
        if name not in asked:
            raise TftpOptionError(f"OACK carries option {raw_name!r}, which was not requested")
        number = parse_number(raw_value)
        if number is None:
            raise TftpOptionError(f"OACK value {raw_value!r} of {raw_name!r} is not a decimal number")
        wanted = parse_number(asked[name])
        if name == "blksize" and not (BLKSIZE_RANGE.start <= number <= (wanted or 0)):
            raise TftpOptionError(f"OACK blksize {number} is not in 8-{wanted} (the request)")
        if name == "windowsize" and not (1 <= number <= (wanted or 0)):
            raise TftpOptionError(f"OACK windowsize {number} is not in 1-{wanted} (the request)")
        if name == "timeout" and number != wanted:
            raise TftpOptionError(f"OACK timeout {number} differs from the requested {wanted}")
        got[name] = number
    return TransferOptions(
        blksize=got.get("blksize", DEFAULT_BLKSIZE),
        windowsize=got.get("windowsize", 1),
        timeout=got.get("timeout"),
        tsize=got.get("tsize"),
    )
