"""A pcapng capture of a run, made from the cases' wire transcripts: no capture privileges needed.

Theory of operation
-------------------
Every case records what its sockets sent and received (:mod:`conformance.transcript`). With
``--pcap PATH`` the command hands each finished case's transcript to :class:`CaptureWriter`, which
turns its entries into IP packets and appends them to one pcapng file, so that the run's traffic
opens in Wireshark or tshark:

- a UDP datagram becomes one IP/UDP packet with the bytes the transcript kept (at most its excerpt;
  the packet's original length is the real one, as a capture with a snap length would say);
- a TCP connection becomes a proper TCP conversation: a three-way handshake (at the ``connect``
  marker, or before the first data of a stream whose marker fell out of the transcript's ring),
  one segment per read or write with sequence and acknowledgement numbers that count every byte,
  FIN for an end of stream, RST for a reset, so that Wireshark reassembles the stream and
  "Follow TCP stream" shows it in order;
- a TLS connection is recorded as its plaintext: the same addresses, as a TCP stream, each packet
  saying so in its comment;
- every packet carries a comment with the case id and verdict; the suite's own markers (deadline
  expired, program restarted) go into the comment of the case's next packet.

Packets are built and written with scapy, a maintained packet library, rather than by hand: it gets
the headers and the pcapng blocks right. Its import costs about half a second, paid only with
``--pcap``. Checksums are computed over the bytes kept, so a packet cut to its excerpt carries a
checksum Wireshark does not verify by default.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.transcript import CLOSE, CONNECT, EOF_RECEIVED, EOF_SENT, RECEIVED, RESET, SENT, Entry, Transcript

#: The most payload one synthesized TCP segment declares, to stay within an IP packet's 65535 bytes.
MAX_SEGMENT = 65000
#: The first sequence number of each side of a synthesized connection (any value would do).
_ISN_LOCAL = 1000
_ISN_REMOTE = 5000
_TLS_NOTE = "TLS plaintext as the suite read and wrote it (the wire carried TLS records)"

Address = tuple[str, int]


@dataclass
class _Stream:
    """One side's next sequence number and whether it has sent FIN, for one connection."""

    local: Address
    remote: Address
    next_local: int = _ISN_LOCAL + 1
    next_remote: int = _ISN_REMOTE + 1
    fin_local: bool = False
    fin_remote: bool = False
    closed: bool = False


@dataclass
class _Case:
    case_id: str
    verdict: str
    started: float
    streams: dict[int, _Stream] = field(default_factory=dict)
    pending_notes: list[str] = field(default_factory=list)


class CaptureWriter:
    """Appends each case's packets to one pcapng file; :meth:`close` when the run ends."""

    def __init__(self, path: Path) -> None:
        from scapy.utils import PcapNgWriter  # heavy: only for runs that write a capture

        self.path = path
        self._writer: Any = PcapNgWriter(str(path))
        self.packets = 0

    def add_case(self, case_id: str, verdict: str, transcript: Transcript, started: float | None = None) -> None:
        """Write the packets of one case; ``started`` is its start in seconds since the epoch (by
        default worked out from the transcript's monotonic start, for a case that just ended)."""
        if started is None:
            started = time.time() - (time.monotonic() - transcript.started)
        case = _Case(case_id, verdict, started)
        if transcript.dropped:
            case.pending_notes.append(f"{transcript.dropped} earlier steps of this case were not kept")
        for entry in transcript:
            if entry.transport == "udp" and entry.is_data:
                self._datagram(case, entry)
            elif entry.transport in ("tcp", "tls") and entry.stream is not None:
                self._stream_entry(case, entry)
            elif not entry.is_data:
                note = f"suite: {entry.event}" + (f": {entry.view}" if entry.view else "")
                case.pending_notes.append(note)

    def close(self) -> None:
        if self.packets == 0:
            # An empty pcapng still needs its section header to open in tshark.
            self._writer.write_header(None)
        self._writer.close()

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- packets ----------------------------------------------------------------------------------

    def _datagram(self, case: _Case, entry: Entry) -> None:
        from scapy.layers.inet import UDP
        from scapy.packet import Raw

        if entry.local is None or entry.remote is None:
            return
        source, destination = _ends(entry)
        layer = UDP(sport=source[1], dport=destination[1], len=8 + entry.size) / Raw(entry.excerpt)
        self._write(case, entry, source, destination, layer, header=8 + entry.size)

    def _stream_entry(self, case: _Case, entry: Entry) -> None:
        assert entry.stream is not None
        stream = case.streams.get(entry.stream)
        if stream is None:
            if entry.local is None or entry.remote is None:
                return
            stream = case.streams[entry.stream] = _Stream(entry.local, entry.remote)
            self._handshake(case, entry, stream)
            if entry.event == CONNECT:
                return
        if stream.closed:
            return
        if entry.event in (SENT, RECEIVED):
            self._data(case, entry, stream)
        elif entry.event == EOF_SENT and not stream.fin_local:
            self._segment(case, entry, stream, from_local=True, flags="FA")
            stream.next_local += 1
            stream.fin_local = True
        elif entry.event == EOF_RECEIVED and not stream.fin_remote:
            self._segment(case, entry, stream, from_local=False, flags="FA")
            stream.next_remote += 1
            stream.fin_remote = True
        elif entry.event == RESET:
            self._segment(case, entry, stream, from_local=False, flags="R")
            stream.closed = True
        elif entry.event == CLOSE:
            if not stream.fin_local:
                self._segment(case, entry, stream, from_local=True, flags="FA")
                stream.next_local += 1
                stream.fin_local = True
            stream.closed = True
        else:
            case.pending_notes.append(f"suite: {entry.event}" + (f": {entry.view}" if entry.view else ""))

    def _handshake(self, case: _Case, entry: Entry, stream: _Stream) -> None:
        self._segment(case, entry, stream, from_local=True, flags="S", seq=_ISN_LOCAL, ack=0)
        self._segment(case, entry, stream, from_local=False, flags="SA", seq=_ISN_REMOTE, ack=_ISN_LOCAL + 1)
        self._segment(case, entry, stream, from_local=True, flags="A")

    def _data(self, case: _Case, entry: Entry, stream: _Stream) -> None:
        from_local = entry.event == SENT
        kept = entry.excerpt
        offset = 0
        remaining = entry.size
        while True:
            length = min(remaining, MAX_SEGMENT)
            payload = kept[offset : offset + length]
            self._segment(case, entry, stream, from_local=from_local, flags="PA", payload=payload, size=length)
            if from_local:
                stream.next_local += length
            else:
                stream.next_remote += length
            offset += length
            remaining -= length
            if remaining <= 0:
                return

    def _segment(
        self,
        case: _Case,
        entry: Entry,
        stream: _Stream,
        *,
        from_local: bool,
        flags: str,
        payload: bytes = b"",
        size: int = 0,
        seq: int | None = None,
        ack: int | None = None,
    ) -> None:
        from scapy.layers.inet import TCP
        from scapy.packet import Raw

        if from_local:
            source, destination = stream.local, stream.remote
            seq = stream.next_local if seq is None else seq
            ack = stream.next_remote if ack is None else ack
        else:
            source, destination = stream.remote, stream.local
            seq = stream.next_remote if seq is None else seq
            ack = stream.next_local if ack is None else ack
        layer = TCP(sport=source[1], dport=destination[1], seq=seq, ack=ack, flags=flags, window=65535)
        if payload:
            layer = layer / Raw(payload)
        self._write(case, entry, source, destination, layer, header=20 + size)

    def _write(self, case: _Case, entry: Entry, source: Address, destination: Address, layer: Any, header: int) -> None:
        from scapy.layers.inet import IP
        from scapy.layers.inet6 import IPv6

        # The length fields say what was on the wire, so that a packet cut to its excerpt still
        # counts all its bytes (Wireshark then marks it "packet size limited during capture").
        if ":" in source[0]:
            packet = IPv6(src=source[0], dst=destination[0], plen=header) / layer
            wirelen = 40 + header
        else:
            packet = IP(src=source[0], dst=destination[0], len=20 + header) / layer
            wirelen = 20 + header
        packet.time = case.started + entry.at
        packet.wirelen = wirelen
        notes = [f"{case.case_id}: {case.verdict}"]
        if entry.transport == "tls":
            notes.append(_TLS_NOTE)
        notes += case.pending_notes
        case.pending_notes.clear()
        packet.comments = [note.encode("utf-8") for note in notes]
        self._writer.write(packet)
        self.packets += 1


def _ends(entry: Entry) -> tuple[Address, Address]:
    assert entry.local is not None and entry.remote is not None
    return (entry.local, entry.remote) if entry.event == SENT else (entry.remote, entry.local)


__all__ = ["MAX_SEGMENT", "CaptureWriter"]
