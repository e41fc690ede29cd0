"""Trio side of a transfer: drive a :mod:`harness.tftp.transfer` machine over a UDP socket.

Shared by the server and the client. One socket per transfer; its peer is one (address,
port) pair, the transfer ID. Datagrams from anyone else get ERROR 5 and change nothing
(RFC 1350 section 4).
"""

from __future__ import annotations

import logging
import math
import socket as stdlib_socket
import struct
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Self, TypeAlias

import trio

from harness.tftp.codec import decode_packet, encode_error
from harness.tftp.errors import ErrorCode, TftpDecodeError
from harness.tftp.transfer import Receiver, Sender, State

__all__ = ["Address", "open_udp_socket", "run_machine", "same_address", "send_quietly"]

logger = logging.getLogger(__name__)

Address: TypeAlias = tuple[Any, ...]
Machine: TypeAlias = Sender | Receiver

#: Bigger kernel buffers let a whole window of large blocks queue up without drops.
_SOCKET_BUFFER = 4 * 1024 * 1024
#: Datagrams taken straight from the kernel between two checkpoints: enough to make a
#: scheduler round trip rare on a window of DATA, few enough to keep other tasks responsive.
_FAST_RECEIVES = 64

# Linux UDP segmentation offload: one sendmsg() carries a window of equal-sized DATA and the
# kernel cuts it into datagrams (UDP_SEGMENT, Linux 4.18); a receiver that asks for UDP_GRO
# (Linux 5.0) may get such a run back in one recvmsg(), with the segment size in a cmsg. On
# the wire nothing changes: every peer still sees one datagram per block. Python has the
# constants from 3.12 on; the numbers are Linux's ABI.
_LINUX = sys.platform.startswith("linux")
_SOL_UDP = getattr(stdlib_socket, "SOL_UDP", 17)
_UDP_SEGMENT = getattr(stdlib_socket, "UDP_SEGMENT", 103)
_UDP_GRO = getattr(stdlib_socket, "UDP_GRO", 104)
#: The kernel's UDP_MAX_SEGMENTS, and a total that stays under the 65,507-byte UDP payload cap.
_GSO_MAX_SEGMENTS = 64
_GSO_MAX_BYTES = 65000
#: A coalesced receive is at most one maximum-size UDP payload.
_GRO_BUFSIZE = 65536
_GRO_CMSG_SPACE = stdlib_socket.CMSG_SPACE(4) if _LINUX else 0


class UdpSocket:
    """A bound UDP socket: Trio waits for datagrams; sends go straight to the kernel.

    :meth:`sendto` skips Trio's scheduler round trip when the kernel takes the datagram at
    once (nearly always for UDP). That halves the per-block cost of a lock-step transfer. It
    means :meth:`sendto` is not a checkpoint; every loop here also awaits :meth:`recvfrom`.

    :meth:`recvfrom` likewise takes a datagram that is already queued (the rest of a window,
    usually) without a scheduler round trip, and waits through Trio only when none is. It
    still checkpoints at least every :data:`_FAST_RECEIVES` datagrams, so a flood cannot
    starve other tasks or outrun a cancel scope's deadline.
    """

    __slots__ = ("_gro", "_gso", "_raw", "_until_checkpoint", "trio_socket")

    def __init__(self, raw: stdlib_socket.socket) -> None:
        self._raw = raw
        self._until_checkpoint = _FAST_RECEIVES
        self._gso = _LINUX and raw.type == stdlib_socket.SOCK_DGRAM
        self._gro = False
        self.trio_socket = trio.socket.from_stdlib_socket(raw)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.trio_socket.close()

    def getsockname(self) -> Address:
        name: Address = self._raw.getsockname()
        return name

    async def recvfrom(self, bufsize: int) -> tuple[bytes, Address]:
        if self._until_checkpoint <= 0:
            self._until_checkpoint = _FAST_RECEIVES
            await trio.lowlevel.checkpoint()
        raw = self._raw
        while True:
            try:
                datagram, address = raw.recvfrom(bufsize)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(raw)
                self._until_checkpoint = _FAST_RECEIVES  # waiting was a checkpoint
                continue
            self._until_checkpoint -= 1
            return datagram, address

    async def sendto(self, datagram: bytes, address: Address) -> None:
        try:
            self._raw.sendto(datagram, address)
        except BlockingIOError:
            await self.trio_socket.sendto(datagram, address)

    async def send_batch(self, datagrams: Sequence[bytes], address: Address) -> None:
        """Send ``datagrams`` in order, a run of equal-sized ones (the last may be shorter) in
        one system call where the kernel offers UDP segmentation; one by one otherwise."""
        sent = 0
        count = len(datagrams)
        if count > 1 and self._gso:
            size = len(datagrams[0])
            per_call = min(_GSO_MAX_SEGMENTS, _GSO_MAX_BYTES // size) if size else 0
            if per_call > 1 and len(datagrams[-1]) <= size and all(len(d) == size for d in datagrams[:-1]):
                control = [(_SOL_UDP, _UDP_SEGMENT, struct.pack("=H", size))]
                try:
                    while sent < count:
                        run = datagrams[sent : sent + per_call]
                        if len(run) == 1:
                            self._raw.sendto(run[0], address)
                        else:
                            self._raw.sendmsg([b"".join(run)], control, 0, address)
                        sent += len(run)
                except BlockingIOError:
                    pass  # the rest goes one by one, waiting for buffer space
                except OSError as exc:
                    # No offload here (old kernel, segment above the MTU, ...): stop trying.
                    logger.debug("UDP segmentation offload refused (%s); sending datagrams one by one", exc)
                    self._gso = False
        for datagram in datagrams[sent:]:
            await self.sendto(datagram, address)

    def enable_coalescing(self) -> None:
        """Ask the kernel to hand over runs of equal-sized datagrams whole (UDP_GRO), to be
        split again by :meth:`recv_batch`. Worth it only on a socket that receives windows."""
        if _LINUX and not self._gro:
            try:
                self._raw.setsockopt(_SOL_UDP, _UDP_GRO, 1)
            except OSError:
                return
            self._gro = True

    async def recv_batch(self, bufsize: int) -> tuple[list[bytes], Address]:
        """One or more datagrams from one sender, each cut to ``bufsize`` bytes like
        :meth:`recvfrom` would; several only after :meth:`enable_coalescing`."""
        if not self._gro:
            datagram, address = await self.recvfrom(bufsize)
            return [datagram], address
        if self._until_checkpoint <= 0:
            self._until_checkpoint = _FAST_RECEIVES
            await trio.lowlevel.checkpoint()
        raw = self._raw
        while True:
            try:
                data, ancillary, _, address = raw.recvmsg(_GRO_BUFSIZE, _GRO_CMSG_SPACE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(raw)
                self._until_checkpoint = _FAST_RECEIVES
                continue
            self._until_checkpoint -= 1
            segment = 0
            for level, kind, value in ancillary:
                if level == _SOL_UDP and kind == _UDP_GRO and len(value) >= 4:
                    segment = struct.unpack("=i", value[:4])[0]
            if 0 < segment < len(data):
                return [data[i : i + min(segment, bufsize)] for i in range(0, len(data), segment)], address
            return [data[:bufsize]], address


async def open_udp_socket(host: str, port: int = 0) -> UdpSocket:
    """A UDP socket bound to ``host``:``port`` (IPv4 or IPv6 by what ``host`` resolves to)."""
    infos = await trio.socket.getaddrinfo(host, port, type=stdlib_socket.SOCK_DGRAM)
    family, type_, proto, _, sockaddr = infos[0]
    raw = stdlib_socket.socket(family, type_, proto)
    try:
        raw.setblocking(False)
        for option in (stdlib_socket.SO_RCVBUF, stdlib_socket.SO_SNDBUF):
            try:
                raw.setsockopt(stdlib_socket.SOL_SOCKET, option, _SOCKET_BUFFER)
            except OSError:  # pragma: no cover - a platform refusing is harmless
                pass
        raw.bind(sockaddr)
    except BaseException:
        raw.close()
        raise
    return UdpSocket(raw)


def same_address(a: Address, b: Address) -> bool:
    """The transfer-ID check: host AND port must match (IPv6 flow info and scope ignored)."""
    return bool(a[0] == b[0] and a[1] == b[1])


async def send_quietly(sock: UdpSocket, datagram: bytes, address: Address) -> None:
    """Send, ignoring network errors: the peer may be gone, and retries cover losses."""
    try:
        await sock.sendto(datagram, address)
    except OSError as exc:
        logger.debug("send to %s failed: %s", address, exc)


async def _no_io() -> None:
    pass


async def run_machine(
    sock: UdpSocket,
    peer: Address,
    machine: Machine,
    *,
    io_needed: Callable[[], bool] = lambda: False,
    do_io: Callable[[], Awaitable[None]] = _no_io,
    bufsize: int,
) -> None:
    """Run ``machine`` while it is ACTIVE or DALLYING: until DONE or FAILED, or until a
    Receiver that holds its final ACK has all the data (RECEIVED).

    ``io_needed`` / ``do_io`` move file data between packets: the owner reads ahead for a
    Sender and drains a Receiver. They are checked after every packet, so keep
    ``io_needed`` cheap. Datagrams from strangers get ERROR 5 and are otherwise ignored.
    """
    send = sock.sendto
    if isinstance(machine, Receiver) and machine.windowsize > 1:
        sock.enable_coalescing()
    recv = sock.recv_batch
    peer_host, peer_port = peer[0], peer[1]
    stranger_error = encode_error(ErrorCode.UNKNOWN_TID, "unknown transfer ID")
    while machine.state is State.ACTIVE or machine.state is State.DALLYING:
        if io_needed():
            await do_io()
        # One cancel scope serves many datagrams. Its deadline is only ever moved earlier:
        # nearly every packet pushes the machine's deadline later, and moving a Trio deadline
        # costs more than handling the packet. A scope that fires early is simply re-armed.
        armed = machine.deadline
        if armed is None:
            armed = math.inf
        with trio.CancelScope(deadline=armed) as scope:
            while True:
                try:
                    datagrams, address = await recv(bufsize)
                except OSError as exc:
                    # E.g. ECONNREFUSED surfaced from an ICMP error: the timer decides.
                    logger.debug("receive on transfer socket failed: %s", exc)
                    await trio.lowlevel.checkpoint()
                    continue
                if address[1] != peer_port or address[0] != peer_host:
                    logger.debug("datagram from stranger %s (transfer with %s)", address[:2], peer[:2])
                    for _ in datagrams:
                        await send_quietly(sock, stranger_error, address)
                    continue
                for datagram in datagrams:
                    now = trio.current_time()
                    try:
                        packet = decode_packet(datagram)
                    except TftpDecodeError as exc:
                        out = machine.receive_malformed(exc, now)
                    else:
                        out = machine.receive(packet, now)
                    try:
                        if len(out) == 1:
                            await send(out[0], peer)
                        elif out:
                            await sock.send_batch(out, peer)
                    except OSError as exc:
                        logger.debug("send to %s failed: %s", peer[:2], exc)
                    if machine.state is not State.ACTIVE:
                        break
                if machine.state is not State.ACTIVE or io_needed():
                    break
                deadline = machine.deadline
                if deadline is not None and deadline < armed:
                    scope.deadline = armed = deadline
        if scope.cancelled_caught:
            now = trio.current_time()
            deadline = machine.deadline
            if deadline is not None and now >= deadline:
                for item in machine.timer_fired(now):
                    await send_quietly(sock, item, peer)
