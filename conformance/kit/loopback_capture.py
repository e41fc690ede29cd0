"""Watching UDP datagrams on the loopback interface without binding their port.

A case that starts a program and wants to see what it broadcasts as it starts and stops can share
the program's port (SO_REUSEADDR) only if the program allows it; a student's responder usually
does not, and then the suite could say nothing. A packet socket on ``lo`` sees every datagram
that crosses it, whoever is bound where. It needs CAP_NET_RAW (root), and Linux.

A :class:`CaptureSocket` looks like the part of a Trio UDP socket that the cases' peers use
(``recvfrom``, ``getsockname``, ``close``): it yields the payload and source of each datagram sent
to one (address, port). A classic BPF filter in the kernel keeps all other loopback traffic (a
32 MiB TFTP transfer in a parallel test, say) out of its queue.
"""

from __future__ import annotations

import ctypes
import socket
import struct

import trio

ETH_P_IP = 0x0800
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
# Room for bursts of small datagrams while a case is busy elsewhere.
RECEIVE_BUFFER = 1 << 20
_RECEIVE_SIZE = 65536 + 60


def _udp_to_port_filter(port: int, *, source: bool = False) -> list[tuple[int, int, int, int]]:
    """Accept IPv4 UDP datagrams (first fragments) whose destination (or ``source``) port is ``port``."""
    return [
        (0x30, 0, 0, 9),  # ldb [9]: IP protocol
        (0x15, 0, 6, socket.IPPROTO_UDP),  # jeq UDP, else drop
        (0x28, 0, 0, 6),  # ldh [6]: flags and fragment offset
        (0x45, 4, 0, 0x1FFF),  # jset offset: a later fragment, drop
        (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf): IP header length
        (0x48, 0, 0, 0 if source else 2),  # ldh [x+0] or [x+2]: UDP source or destination port
        (0x15, 0, 1, port),  # jeq port, else drop
        (0x06, 0, 0, 0x40000),  # ret: accept (whole packet)
        (0x06, 0, 0, 0),  # ret: drop
    ]


def _attach(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    code = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def capture_available() -> bool:
    """Whether this process may open a packet socket on the loopback interface."""
    if not hasattr(socket, "AF_PACKET"):
        return False
    try:
        probe = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    except OSError:
        return False
    probe.close()
    return True


def parse_udp(packet: bytes) -> tuple[str, int, str, int, bytes] | None:
    """(source address, source port, destination address, destination port, payload) of an IPv4
    UDP packet, or None for anything else."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP:
        return None
    header = (packet[0] & 0x0F) * 4
    if len(packet) < header + 8:
        return None
    source, destination = socket.inet_ntoa(packet[12:16]), socket.inet_ntoa(packet[16:20])
    source_port, destination_port, length = struct.unpack("!HHH", packet[header : header + 6])
    payload = packet[header + 8 : header + max(length, 8)]
    return source, source_port, destination, destination_port, payload


def _packet_socket(program: list[tuple[int, int, int, int]]) -> trio.socket.SocketType:
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    try:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        _attach(raw, program)
        raw.bind(("lo", ETH_P_IP))
        raw.setblocking(False)
    except BaseException:
        raw.close()
        raise
    return trio.socket.from_stdlib_socket(raw)


class SentFromPort:
    """Datagrams sent from ``port`` on loopback, wherever they go: where a program's answers went."""

    def __init__(self, port: int) -> None:
        self._sock = _packet_socket(_udp_to_port_filter(port, source=True))
        self.port = port

    async def receive(self) -> tuple[bytes, tuple[str, int]]:
        """The next datagram's payload and its destination."""
        while True:
            packet, link = await self._sock.recvfrom(_RECEIVE_SIZE)
            if link[2] == PACKET_OUTGOING:
                continue  # loopback shows each packet twice: leaving and arriving
            parsed = parse_udp(packet)
            if parsed is not None and parsed[1] == self.port:
                return parsed[4], (parsed[2], parsed[3])

    def close(self) -> None:
        self._sock.close()


class CaptureSocket:
    """Datagrams sent to ``(address, port)`` on loopback, as ``recvfrom`` gives them."""

    def __init__(self, address: str, port: int) -> None:
        self._sock = _packet_socket(_udp_to_port_filter(port))
        self.address = address
        self.port = port

    def getsockname(self) -> tuple[str, int]:
        return (self.address, self.port)

    async def recvfrom(self, size: int, /) -> tuple[bytes, tuple[str, int]]:
        while True:
            packet, link = await self._sock.recvfrom(_RECEIVE_SIZE)
            if link[2] == PACKET_OUTGOING:
                continue  # loopback shows each packet twice: leaving and arriving
            parsed = parse_udp(packet)
            if parsed is None:
                continue
            source, source_port, destination, destination_port, payload = parsed
            if destination == self.address and destination_port == self.port:
                return payload[:size], (source, source_port)

    async def sendto(self, data: bytes, address: tuple[str, int], /) -> int:
        raise OSError("a capture socket only watches")

    def close(self) -> None:
        self._sock.close()
