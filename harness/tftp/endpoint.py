"""Drive a :mod:`harness.tftp.machine` machine over a UDP socket; shared by server and client.

Theory of operation
-------------------
One socket per transfer; its peer is one (address, port) pair, the transfer ID. Datagrams
from anyone else get ERROR 5 and change nothing (RFC 1350 section 4).

:func:`run_machine` runs the machine in one of two drivers, the same loop twice:

* **In a worker thread**, when the caller passes a ``limiter`` with a token free. The thread
  switches the socket to blocking mode and waits inside the receive system call, with a
  kernel receive timeout (``SO_RCVTIMEO``) of at most :data:`CANCEL_POLL` seconds, or less
  when the machine's deadline is nearer. A lock-step block then costs one receive and one
  send and no scheduler at all: through Trio, every block waited for one scheduler
  wake-up, which made a lock-step transfer take nearly twice as long as tftpd-hpa's. File
  data moves in the same thread (``do_io``). The thread asks Trio whether the task was
  cancelled after every receive timeout and every :data:`_FAST_RECEIVES` datagrams, so a
  cancelled transfer (a server shutting down) ends within about :data:`CANCEL_POLL`
  seconds, and :func:`run_machine` only returns once the thread is done with the socket.
  In lock-step the thread may poll for the peer's answer instead of sleeping, when the
  waits show a local peer on another CPU: see :mod:`harness.tftp.polling`.
* **In the Trio task**, without a limiter or when every token is taken (many transfers at
  once): Trio waits for the socket, and ``do_io`` runs through ``trio.to_thread``. Queued
  datagrams are taken without a scheduler round trip and the cancel scope's deadline is
  only moved earlier; see :class:`UdpSocket`.

The machine's clock is the driver's: ``time.monotonic()`` in a thread,
``trio.current_time()`` in Trio. So the driver starts the machine itself (``begin(now)``,
e.g. ``Sender.start``); a machine is handed to :func:`run_machine` without a deadline set
in another clock.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket as stdlib_socket
import struct
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Self, TypeAlias

import trio

from harness._kit.addresses import Address
from harness._kit.udp import open_raw_udp_socket
from harness.tftp.errors import ErrorCode
from harness.tftp.machine import Receiver, Sender, State
from harness.tftp.polling import PeerWait, poll_permit
from harness.tftp.wire import encode_error

__all__ = [
    "CANCEL_POLL",
    "Address",
    "UdpSocket",
    "open_tftp_socket",
    "run_machine",
    "send_quietly",
]

logger = logging.getLogger(__name__)

Machine: TypeAlias = Sender | Receiver

#: Longest a transfer thread waits in one system call before it checks for cancellation:
#: how long a server shutdown may wait for a transfer thread to let go of its socket. Each
#: check costs one wake-up of an idle transfer, so 20 a second per idle transfer.
CANCEL_POLL = 0.05
#: Bigger kernel buffers let a whole window of large blocks queue up without drops.
_SOCKET_BUFFER = 4 * 1024 * 1024
#: Datagrams taken straight from the kernel between two checkpoints (Trio) or cancellation
#: checks (thread): enough to make them rare on a window of DATA, few enough that a flood
#: can neither starve other tasks nor outrun a cancellation.
_FAST_RECEIVES = 64
#: Shortest receive timeout the thread driver sets: a zero timeval means "wait forever".
_MIN_WAIT = 0.001

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
#: Linux's struct timeval for SO_RCVTIMEO / SO_SNDTIMEO: two C longs.
_TIMEVAL = struct.Struct("@ll")


class UdpSocket:
    """A bound UDP socket for one transfer (or the server's listening port).

    Normally non-blocking, for Trio: :meth:`sendto` skips Trio's scheduler round trip when
    the kernel takes the datagram at once (nearly always for UDP), which means it is not a
    checkpoint; every loop here also awaits a receive. :meth:`recvfrom` and
    :meth:`recv_batch` likewise take a datagram that is already queued (the rest of a
    window, usually) without a scheduler round trip, and wait through Trio only when none
    is. They still checkpoint at least every :data:`_FAST_RECEIVES` datagrams, so a flood
    cannot starve other tasks or outrun a cancel scope's deadline.

    Inside :meth:`blocking` (a worker thread owns the socket then) the same calls without
    ``await``, :meth:`receive_now` and :meth:`send_now`, block in the kernel for at most
    :meth:`set_receive_timeout` and :data:`CANCEL_POLL` seconds.
    """

    __slots__ = ("_gro", "_gso", "_kernel_timeouts", "_raw", "_until_checkpoint", "trio_socket")

    def __init__(self, raw: stdlib_socket.socket) -> None:
        self._raw = raw
        self._until_checkpoint = _FAST_RECEIVES
        self._gso = _LINUX and raw.type == stdlib_socket.SOCK_DGRAM
        self._gro = False
        self._kernel_timeouts = _LINUX
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

    # -- one system call, no waiting through Trio --------------------------------------------

    def receive_now(self, bufsize: int, flags: int = 0) -> tuple[list[bytes], Address]:
        """One or more datagrams from one sender, each cut to ``bufsize`` bytes like
        ``recvfrom`` would; several only after :meth:`enable_coalescing`. Raises
        :exc:`BlockingIOError` (or :exc:`TimeoutError`) when none came in time; ``flags``
        as for ``recvfrom`` (``MSG_DONTWAIT`` polls a blocking socket)."""
        raw = self._raw
        if not self._gro:
            datagram, address = raw.recvfrom(bufsize, flags)
            return [datagram], address
        data, ancillary, _, address = raw.recvmsg(_GRO_BUFSIZE, _GRO_CMSG_SPACE, flags)
        segment = 0
        for level, kind, value in ancillary:
            if level == _SOL_UDP and kind == _UDP_GRO and len(value) >= 4:
                segment = struct.unpack("=i", value[:4])[0]
        if 0 < segment < len(data):
            return [data[i : i + min(segment, bufsize)] for i in range(0, len(data), segment)], address
        return [data[:bufsize]], address

    def send_now(self, datagrams: Sequence[bytes], address: Address) -> int:
        """Hand ``datagrams`` to the kernel in order, a run of equal-sized ones (the last may
        be shorter) in one system call where the kernel offers UDP segmentation. Returns how
        many it took before it would block (or, in :meth:`blocking` mode, before the send
        timeout passed); other errors are raised."""
        raw = self._raw
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
                            raw.sendto(run[0], address)
                        else:
                            raw.sendmsg([b"".join(run)], control, 0, address)
                        sent += len(run)
                except (BlockingIOError, TimeoutError):
                    return sent
                except OSError as exc:
                    # No offload here (old kernel, segment above the MTU, ...): stop trying.
                    logger.debug("UDP segmentation offload refused (%s); sending datagrams one by one", exc)
                    self._gso = False
        try:
            for datagram in datagrams[sent:]:
                raw.sendto(datagram, address)
                sent += 1
        except (BlockingIOError, TimeoutError):
            pass
        return sent

    # -- Trio ------------------------------------------------------------------------------

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

    async def recv_batch(self, bufsize: int) -> tuple[list[bytes], Address]:
        """:meth:`receive_now`, waiting through Trio while nothing is queued."""
        if self._until_checkpoint <= 0:
            self._until_checkpoint = _FAST_RECEIVES
            await trio.lowlevel.checkpoint()
        while True:
            try:
                batch = self.receive_now(bufsize)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._raw)
                self._until_checkpoint = _FAST_RECEIVES
                continue
            self._until_checkpoint -= 1
            return batch

    async def sendto(self, datagram: bytes, address: Address) -> None:
        try:
            self._raw.sendto(datagram, address)
        except BlockingIOError:
            await self.trio_socket.sendto(datagram, address)

    async def send_batch(self, datagrams: Sequence[bytes], address: Address) -> None:
        """:meth:`send_now`, then the rest one by one as the kernel makes room."""
        sent = self.send_now(datagrams, address)
        for datagram in datagrams[sent:]:
            await self.sendto(datagram, address)

    def enable_coalescing(self) -> None:
        """Ask the kernel to hand over runs of equal-sized datagrams whole (UDP_GRO), to be
        split again by :meth:`receive_now`. Worth it only on a socket that receives windows."""
        if _LINUX and not self._gro:
            try:
                self._raw.setsockopt(_SOL_UDP, _UDP_GRO, 1)
            except OSError:
                return
            self._gro = True

    # -- a worker thread -------------------------------------------------------------------

    @contextlib.contextmanager
    def blocking(self) -> Iterator[None]:
        """Blocking mode for a worker thread that owns the socket meanwhile; Trio must not
        use it until the block ends. Sends give up after :data:`CANCEL_POLL` seconds."""
        raw = self._raw
        raw.setblocking(True)
        try:
            if self._kernel_timeouts:
                try:
                    raw.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDTIMEO, _timeval(CANCEL_POLL))
                except OSError:  # pragma: no cover - a kernel without it: Python's timeouts
                    self._kernel_timeouts = False
            self.set_receive_timeout(CANCEL_POLL)
            yield
        finally:
            raw.setblocking(False)

    def set_receive_timeout(self, seconds: float) -> None:
        """In :meth:`blocking` mode, how long :meth:`receive_now` may wait (> 0)."""
        if self._kernel_timeouts:
            # The kernel's own timeout: a receive stays one system call (Python's timeout
            # would poll() first).
            self._raw.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVTIMEO, _timeval(seconds))
        else:  # pragma: no cover - not Linux
            self._raw.settimeout(seconds)


def _timeval(seconds: float) -> bytes:
    """``seconds`` (> 0) as a struct timeval, never all zero: that would mean no timeout."""
    microseconds = max(1, round(seconds * 1_000_000))
    return _TIMEVAL.pack(*divmod(microseconds, 1_000_000))


async def open_tftp_socket(host: str, port: int = 0) -> UdpSocket:
    """A UDP socket bound to ``host``:``port`` (IPv4 or IPv6 by what ``host`` resolves to), with big buffers."""
    return UdpSocket(await open_raw_udp_socket(host, port, buffer_size=_SOCKET_BUFFER))


async def send_quietly(sock: UdpSocket, datagram: bytes, address: Address) -> None:
    """Send, ignoring network errors: the peer may be gone, and retries cover losses."""
    try:
        await sock.sendto(datagram, address)
    except OSError as exc:
        logger.debug("send to %s failed: %s", address, exc)


def _never() -> bool:
    return False


def _no_io() -> None:
    pass


async def run_machine(
    sock: UdpSocket,
    peer: Address,
    machine: Machine,
    *,
    begin: Callable[[float], Sequence[bytes]],
    io_needed: Callable[[], bool] = _never,
    do_io: Callable[[], None] = _no_io,
    bufsize: int,
    limiter: trio.CapacityLimiter | None = None,
) -> None:
    """Start ``machine`` with ``begin(now)`` and run it while it is ACTIVE or DALLYING:
    until DONE or FAILED, or until a Receiver that holds its final ACK has all the data
    (RECEIVED).

    ``io_needed`` / ``do_io`` move file data between packets: the owner reads ahead for a
    Sender and drains a Receiver. ``io_needed`` is checked after every packet, so keep it
    cheap; ``do_io`` blocks (it runs in a worker thread) and its exceptions propagate.
    Datagrams from strangers get ERROR 5 and are otherwise ignored.

    With a ``limiter`` that has a token free, the transfer runs in a worker thread that
    holds the token (see the module's theory of operation); otherwise in this task.
    """
    if limiter is not None and limiter.available_tokens >= 1:
        # Nothing between this check and run_sync's acquire lets another task take the token.
        await trio.to_thread.run_sync(
            _drive_in_thread,
            sock,
            peer,
            machine,
            begin,
            io_needed,
            do_io,
            bufsize,
            limiter=limiter,
            thread_name=f"tftp transfer with {peer[0]} port {peer[1]}",
        )
    else:
        await _drive_in_trio(sock, peer, machine, begin, io_needed, do_io, bufsize)


def _drive_in_thread(
    sock: UdpSocket,
    peer: Address,
    machine: Machine,
    begin: Callable[[float], Sequence[bytes]],
    io_needed: Callable[[], bool],
    do_io: Callable[[], None],
    bufsize: int,
) -> None:
    clock = time.monotonic
    check_cancelled = trio.from_thread.check_cancelled
    receive_datagram = machine.receive_datagram
    raw_send = sock._raw.sendto
    if isinstance(machine, Receiver) and machine.windowsize > 1:
        sock.enable_coalescing()
    peer_host, peer_port = peer[0], peer[1]
    stranger_error = encode_error(ErrorCode.UNKNOWN_TID, "unknown transfer ID")

    def send(out: Sequence[bytes], address: Address) -> None:
        try:
            if len(out) == 1:
                raw_send(out[0], address)
            elif out and sock.send_now(out, address) < len(out):
                logger.debug("send to %s timed out; retransmission will cover the rest", address[:2])
        except OSError as exc:  # includes a timed-out single send: the timer covers it
            logger.debug("send to %s failed: %s", address[:2], exc)

    with sock.blocking(), poll_permit(wanted=machine.windowsize == 1) as may_poll:
        waiting = PeerWait(sock.receive_now, allowed=may_poll, clock=clock)
        receive = waiting.receive
        now = clock()
        send(begin(now), peer)
        wait = CANCEL_POLL  # the receive timeout currently set
        until_check = _FAST_RECEIVES
        while machine.state is State.ACTIVE or machine.state is State.DALLYING:
            if io_needed():
                do_io()
            deadline = machine.deadline
            want = CANCEL_POLL
            if deadline is not None and deadline - now < CANCEL_POLL:
                now = clock()
                if now >= deadline:
                    send(machine.timer_fired(now), peer)
                    continue
                want = max(deadline - now, _MIN_WAIT)
            if want != wait:
                sock.set_receive_timeout(want)
                wait = want
            try:
                datagrams, address = receive(bufsize)
            except (BlockingIOError, TimeoutError):
                check_cancelled()
                waiting.idle()
                until_check = _FAST_RECEIVES
                now = clock()
                continue
            except OSError as exc:
                # E.g. ECONNREFUSED surfaced from an ICMP error: the timer decides.
                logger.debug("receive on transfer socket failed: %s", exc)
                now = clock()
                continue
            until_check -= 1
            if until_check <= 0:
                check_cancelled()
                waiting.review()
                until_check = _FAST_RECEIVES
            if address[1] != peer_port or address[0] != peer_host:
                logger.debug("datagram from stranger %s (transfer with %s)", address[:2], peer[:2])
                send([stranger_error] * len(datagrams), address)
                now = clock()
                continue
            for datagram in datagrams:
                now = clock()
                out = receive_datagram(datagram, now)
                if out:
                    send(out, peer)
                if machine.state is not State.ACTIVE:
                    break


async def _drive_in_trio(
    sock: UdpSocket,
    peer: Address,
    machine: Machine,
    begin: Callable[[float], Sequence[bytes]],
    io_needed: Callable[[], bool],
    do_io: Callable[[], None],
    bufsize: int,
) -> None:
    send = sock.sendto
    if isinstance(machine, Receiver) and machine.windowsize > 1:
        sock.enable_coalescing()
    recv = sock.recv_batch
    peer_host, peer_port = peer[0], peer[1]
    stranger_error = encode_error(ErrorCode.UNKNOWN_TID, "unknown transfer ID")
    for datagram in begin(trio.current_time()):
        await send_quietly(sock, datagram, peer)
    while machine.state is State.ACTIVE or machine.state is State.DALLYING:
        if io_needed():
            await trio.to_thread.run_sync(do_io)
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
                    out = machine.receive_datagram(datagram, trio.current_time())
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
