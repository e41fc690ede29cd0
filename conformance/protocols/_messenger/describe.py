"""One-line views of messenger datagrams (chat, broadcast): ``SENDMSG|CHECK #1042 from alice: "你好"``."""

from __future__ import annotations

from conformance.transcript import Views, escape
from harness.messenger.wire import SENDCHECKOPT, Command, decode


def _command(number: int, flags: int) -> str:
    try:
        name = Command(number).name
    except ValueError:
        name = f"command {number}"
    if flags & SENDCHECKOPT:
        name += "|CHECK"
    if flags & ~SENDCHECKOPT:
        name += f"|{flags & ~SENDCHECKOPT:#x}"
    return name


def view(data: bytes) -> str:
    """The datagram as a person reads it; a malformed one raises the codec's error (the transcript shows it)."""
    datagram = decode(data)
    text = f"{_command(datagram.command, datagram.flags)} #{datagram.packet_no} from {escape(datagram.user, 30)}"
    if datagram.extra:
        text += f': "{escape(datagram.extra, 60)}"'
    return text


VIEWS = Views(datagram_view=view)
