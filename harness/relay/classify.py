"""Packet kind classifiers for the UDP relay (sans-IO: bytes in, kind name out).

A classifier names what a datagram is, so that impairment rules can say "the 3rd ACK" instead of
"the 7th packet".  Classifiers never raise: anything they cannot recognise is :data:`OTHER`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

#: The kind of a datagram that its classifier does not recognise (and of every datagram under ``raw``).
OTHER = "other"

#: Selector kind that matches every datagram, whatever the classifier.
ANY = "any"

#: TFTP kinds by opcode (RFC 1350 section 5, RFC 2347 for OACK).
TFTP_OPCODES: Mapping[int, str] = {1: "rrq", 2: "wrq", 3: "data", 4: "ack", 5: "error", 6: "oack"}
TFTP_KINDS: tuple[str, ...] = tuple(TFTP_OPCODES.values())

#: Messenger (IP Messenger style) kinds by the command's low 8 bits.
MESSENGER_COMMANDS: Mapping[int, str] = {1: "entry", 2: "exit", 3: "ansentry", 32: "sendmsg", 33: "recvmsg"}
MESSENGER_KINDS: tuple[str, ...] = tuple(MESSENGER_COMMANDS.values())

# Only ASCII digits: int() alone would also take "+32", " 32" and "3_2".
_DECIMAL = re.compile(r"[0-9]+")

Classifier = Callable[[bytes], str]


def classify_tftp(payload: bytes) -> str:
    """Name a TFTP datagram by its 2-byte big-endian opcode."""
    if len(payload) < 2:
        return OTHER
    return TFTP_OPCODES.get(int.from_bytes(payload[:2], "big"), OTHER)


def classify_messenger(payload: bytes) -> str:
    """Name a ``version:packet_no:user:host:command:extra`` datagram by its command's low 8 bits."""
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
    return MESSENGER_COMMANDS.get(int(fields[4]) & 0xFF, OTHER)


def classify_raw(payload: bytes) -> str:
    """Do not look inside: every datagram is :data:`OTHER`, selectable only as ``any``."""
    return OTHER


#: Classifier name -> (function, kinds it can produce besides OTHER).
CLASSIFIERS: Mapping[str, tuple[Classifier, tuple[str, ...]]] = {
    "tftp": (classify_tftp, TFTP_KINDS),
    "messenger": (classify_messenger, MESSENGER_KINDS),
    "raw": (classify_raw, ()),
}
