"""One-line views of TFTP datagrams for the wire transcript: ``RRQ "a.bin" octet blksize=8``, ``DATA 3 (512 bytes)``."""

from __future__ import annotations

from conformance.transcript import Views, escape
from harness.tftp.wire import Ack, Data, ErrorPacket, OptionAck, ReadRequest, WriteRequest, decode_packet


def _options(options: tuple[tuple[str, str], ...]) -> str:
    return "".join(f" {name}={value}" for name, value in options)


def view(datagram: bytes) -> str:
    """The packet as a person reads it; a malformed one raises the codec's error (the transcript shows it)."""
    packet = decode_packet(datagram)
    if isinstance(packet, ReadRequest | WriteRequest):
        kind = "RRQ" if isinstance(packet, ReadRequest) else "WRQ"
        return f'{kind} "{escape(packet.filename, 60)}" {escape(packet.mode, 20)}{_options(packet.options)}'
    if isinstance(packet, Data):
        return f"DATA {packet.block} ({len(packet.payload)} bytes)"
    if isinstance(packet, Ack):
        return f"ACK {packet.block}"
    if isinstance(packet, ErrorPacket):
        return f'ERROR {packet.code} "{escape(packet.message, 60)}"'
    assert isinstance(packet, OptionAck)
    return "OACK" + _options(packet.options)


VIEWS = Views(datagram_view=view)
