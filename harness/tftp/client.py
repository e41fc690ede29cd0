"""The reference TFTP client: :func:`tftp_get` and :func:`tftp_put`.

The request goes to the server's port; the first answer from the server's host fixes the
server's transfer ID, and every later datagram must come from it (others get ERROR 5 and are
otherwise ignored). An OACK is checked against the request (ERROR 8 for anything not asked
for or out of range) and answered with ACK 0 (get) or DATA 1 (put); a server that ignores the
options and answers with DATA 1 or ACK 0 is served with the defaults.

``sink`` / ``source`` is a path or a binary file object. A path is written atomically: a
temporary file in its directory, renamed over it only when the transfer is complete. A file
object is written as data arrives, so after a failure it holds whatever came before it.
The client does not dally after its final ACK (RFC 1350 section 6 only encourages it).
What it sends (the request, then DATA or ACKs) is resent on the server's schedule: after
``timeout``, then at doubling intervals up to 8 s or ``timeout`` if that is longer (see
:mod:`harness.tftp.machine`).
Once the request is answered, the transfer runs in a worker thread (up to
:data:`TRANSFER_THREADS` at once per Trio run, beyond that in the calling task; see
:mod:`harness.tftp.endpoint`); ``on_progress`` is still called in Trio's thread.
Errors raise :class:`~harness.tftp.errors.TftpError` subclasses with one-line messages.
"""

from __future__ import annotations

import functools
import logging
import os
import socket as stdlib_socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeAlias, cast

import trio

from harness._kit.addresses import Address
from harness.tftp.blocks import check_rollover
from harness.tftp.endpoint import UdpSocket, open_tftp_socket, run_machine, send_quietly
from harness.tftp.errors import (
    ErrorCode,
    TftpDecodeError,
    TftpError,
    TftpOptionError,
    TftpProtocolError,
    TftpRemoteError,
    TftpTimeoutError,
)
from harness.tftp.files import PartialFile
from harness.tftp.machine import Receiver, Sender, State, describe_backoff, retransmission_waits, total_wait
from harness.tftp.netascii import NetasciiDecoder, encode_netascii
from harness.tftp.options import TransferOptions, accept_oack, request_options
from harness.tftp.wire import (
    Ack,
    Data,
    ErrorPacket,
    OptionAck,
    OptionList,
    Packet,
    ReadRequest,
    WriteRequest,
    decode_packet,
    encode_error,
)

__all__ = ["ProgressCallback", "TransferInfo", "tftp_get", "tftp_put"]

logger = logging.getLogger(__name__)

#: ``on_progress(bytes_done, total_or_None)``, called every :data:`IO_CHUNK` bytes and at the end.
ProgressCallback: TypeAlias = Callable[[int, int | None], None]
IO_CHUNK = 256 * 1024
#: Transfers of one Trio run that run in worker threads at once (see
#: :mod:`harness.tftp.endpoint`); more run in Trio tasks.
TRANSFER_THREADS = 256
_LIMITER: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("harness.tftp.client transfer threads")
_MODES = ("octet", "netascii")
_REPLY_BUFSIZE = 65536


@dataclass(frozen=True, slots=True)
class TransferInfo:
    """What a finished transfer did."""

    #: Bytes of file data moved (local bytes: after netascii translation).
    size: int
    #: Options in force: negotiated, or defaults when the server sent no OACK.
    options: TransferOptions
    #: The OACK's options as received, or None when the server answered without one.
    oack: OptionList | None
    #: Datagrams this client sent again (request, ACK or DATA).
    retransmissions: int
    #: The server's transfer ID: (host, port) its DATA or ACKs came from.
    server: tuple[str, int]
    #: Seconds from request to completion.
    elapsed: float


@dataclass(slots=True)
class _Reply:
    packet: Packet
    peer: Address
    retransmissions: int


def _check_common(mode: str, rollover: int, timeout: float, retries: int) -> bool:
    if mode.lower() not in _MODES:
        raise ValueError(f"mode {mode!r} is not supported; use octet or netascii")
    check_rollover(rollover)
    if timeout <= 0 or retries < 0:
        raise ValueError("timeout must be positive and retries non-negative")
    return mode.lower() == "netascii"


async def _open_client_socket(host: str, port: int) -> tuple[UdpSocket, Address]:
    infos = await trio.socket.getaddrinfo(host, port, type=stdlib_socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = infos[0]
    wildcard = "::" if family == stdlib_socket.AF_INET6 else "0.0.0.0"
    # The whole sockaddr (4 fields for IPv6), so that it compares equal to what recvfrom gives.
    server = cast(Address, sockaddr)
    return await open_tftp_socket(wildcard, 0), server


async def _request(sock: UdpSocket, server: Address, request: bytes, *, timeout: float, retries: int) -> _Reply:
    """Send the request until the server's host answers; its source port is the TID. The
    request is resent on the transfers' schedule: after ``timeout``, then at doubling intervals
    (see :func:`~harness.tftp.machine.retransmission_waits`)."""
    for tries, wait in enumerate(retransmission_waits(timeout, retries)):
        await sock.sendto(request, server)
        with trio.move_on_after(wait):
            while True:
                try:
                    datagram, address = await sock.recvfrom(_REPLY_BUFSIZE)
                except OSError as exc:  # e.g. ICMP port unreachable: keep waiting
                    logger.debug("receive failed: %s", exc)
                    await trio.lowlevel.checkpoint()
                    continue
                if address[0] != server[0]:
                    await send_quietly(sock, encode_error(ErrorCode.UNKNOWN_TID, "unknown transfer ID"), address)
                    continue
                try:
                    packet = decode_packet(datagram)
                except TftpDecodeError as exc:
                    await send_quietly(sock, encode_error(exc.error_code, str(exc)), address)
                    raise TftpProtocolError(f"malformed answer to the request: {exc}") from None
                return _Reply(packet, address, tries)
    silence, schedule = total_wait(timeout, retries), describe_backoff(timeout, retries)
    raise TftpTimeoutError(f"no answer from {server[0]} port {server[1]} for {silence:g} s ({schedule})")


async def _fail(sock: UdpSocket, peer: Address, error: TftpProtocolError) -> TftpProtocolError:
    await send_quietly(sock, encode_error(error.error_code, str(error)), peer)
    return error


def _limiter() -> trio.CapacityLimiter:
    try:
        return _LIMITER.get()
    except LookupError:
        limiter = trio.CapacityLimiter(TRANSFER_THREADS)
        _LIMITER.set(limiter)
        return limiter


def _raise_failure(machine: Sender | Receiver) -> None:
    if machine.state is State.FAILED:
        assert machine.error is not None
        raise machine.error


async def _run(
    sock: UdpSocket,
    peer: Address,
    machine: Sender | Receiver,
    begin: Callable[[float], Sequence[bytes]],
    io_needed: Callable[[], bool],
    do_io: Callable[[], None],
    bufsize: int,
) -> None:
    try:
        await run_machine(
            sock, peer, machine, begin=begin, io_needed=io_needed, do_io=do_io, bufsize=bufsize, limiter=_limiter()
        )
    except (OSError, TftpError) as exc:
        # Our side failed (local file I/O): tell the server before giving up.
        message = str(exc) if isinstance(exc, TftpError) else f"client error: {exc.strerror or exc}"
        for datagram in machine.abort(ErrorCode.NOT_DEFINED, message):
            await send_quietly(sock, datagram, peer)
        raise
    _raise_failure(machine)


async def tftp_get(
    host: str,
    port: int,
    remote: str,
    sink: BinaryIO | str | os.PathLike[str],
    *,
    mode: str = "octet",
    blksize: int | None = None,
    windowsize: int | None = None,
    timeout: float = 1.0,
    retries: int = 5,
    tsize: bool = False,
    timeout_option: int | None = None,
    rollover: int = 0,
    on_progress: ProgressCallback | None = None,
) -> TransferInfo:
    """Download ``remote`` from ``host``:``port`` into ``sink`` (a path or a binary file).

    ``blksize``, ``windowsize``, ``timeout_option`` (RFC 2349 timeout, seconds) and ``tsize``
    are requested as options when given; ``timeout`` is the local retransmission timeout in
    seconds, replaced by ``timeout_option`` once the server acknowledges it: the first
    retransmission comes that long after the last send, each further one after twice the
    previous wait, up to ``max(timeout, MAX_BACKOFF)`` (RFC 1123 4.2.3.2; see
    :mod:`harness.tftp.machine`). ``retries`` is how many retransmissions without progress
    are tried before giving up: 1 + 2 + 4 + 8 + 8 + 8 = 31 s of silence with the defaults
    (once the server has answered, it is told with ERROR 0 "timed out: ...").
    ``rollover`` is the block number expected after 65535.
    """
    netascii = _check_common(mode, rollover, timeout, retries)
    requested = request_options(
        blksize=blksize, windowsize=windowsize, timeout=timeout_option, tsize=0 if tsize else None
    )
    started = trio.current_time()
    partial: PartialFile | None = None
    if isinstance(sink, (str, os.PathLike)):
        partial = await trio.to_thread.run_sync(PartialFile.create, Path(sink))
        out: BinaryIO = partial.file
    else:
        out = sink
    try:
        sock, server = await _open_client_socket(host, port)
        with sock:
            request = ReadRequest(remote, mode, requested).encode()
            reply = await _request(sock, server, request, timeout=timeout, retries=retries)
            peer, packet = reply.peer, reply.packet
            oack: OptionList | None = None
            if isinstance(packet, ErrorPacket):
                raise TftpRemoteError(packet.code, packet.message)
            if isinstance(packet, OptionAck):
                oack = packet.options
                try:
                    options = accept_oack(requested, oack)
                except TftpOptionError as exc:
                    raise await _fail(sock, peer, exc) from None
            elif isinstance(packet, Data):
                options = TransferOptions()
            else:
                raise await _fail(sock, peer, TftpProtocolError(f"server answered RRQ with {packet.opcode.name}"))
            receiver = Receiver(
                blksize=options.blksize,
                windowsize=options.windowsize,
                timeout=options.timeout or timeout,
                retries=retries,
                rollover=rollover,
                first=None if oack is None else Ack(0).encode(),
                after_oack=oack is not None,
                dally=False,
            )
            receiver.retransmissions = reply.retransmissions
            decoder = NetasciiDecoder() if netascii else None
            written = 0

            def drain(final: bool = False) -> None:
                # Runs in a worker thread; the progress callback runs in Trio's.
                nonlocal written
                data = receiver.take_data()
                if decoder is not None:
                    data = decoder.feed(data) + (decoder.finish() if final else b"")
                if data:
                    out.write(data)
                    written += len(data)
                if on_progress is not None:
                    trio.from_thread.run_sync(on_progress, written, options.tsize)

            begin = receiver.start if oack is not None else functools.partial(receiver.receive, packet)
            await _run(sock, peer, receiver, begin, lambda: receiver.pending >= IO_CHUNK, drain, options.blksize + 5)
            await trio.to_thread.run_sync(drain, True)
        if partial is not None:
            await trio.to_thread.run_sync(partial.commit)
        else:
            await trio.to_thread.run_sync(out.flush)
    finally:
        if partial is not None:
            partial.discard()
    return TransferInfo(
        size=written,
        options=options,
        oack=oack,
        retransmissions=receiver.retransmissions,
        server=(peer[0], peer[1]),
        elapsed=trio.current_time() - started,
    )


def _open_source(source: BinaryIO | str | os.PathLike[str]) -> tuple[BinaryIO, bool, int | None]:
    """(file, whether we opened it, its remaining size if known)."""
    if isinstance(source, (str, os.PathLike)):
        file: BinaryIO = open(source, "rb", buffering=0)  # closed by the caller
        opened = True
    else:
        file, opened = source, False
    size: int | None = None
    try:
        if file.seekable():
            position = file.tell()
            size = file.seek(0, os.SEEK_END) - position
            file.seek(position)
    except (OSError, ValueError):
        size = None
    return file, opened, size


async def tftp_put(
    host: str,
    port: int,
    remote: str,
    source: BinaryIO | str | os.PathLike[str],
    *,
    mode: str = "octet",
    blksize: int | None = None,
    windowsize: int | None = None,
    timeout: float = 1.0,
    retries: int = 5,
    tsize: bool = False,
    timeout_option: int | None = None,
    rollover: int = 0,
    on_progress: ProgressCallback | None = None,
) -> TransferInfo:
    """Upload ``source`` (a path or a binary file) to ``host``:``port`` as ``remote``.

    Arguments as for :func:`tftp_get`. With ``tsize`` the size is announced when it is known
    (a regular file in octet mode; netascii changes the size on the wire).
    """
    netascii = _check_common(mode, rollover, timeout, retries)
    started = trio.current_time()
    file, opened, size = await trio.to_thread.run_sync(_open_source, source)
    try:
        announced = size if (tsize and not netascii) else None
        requested = request_options(blksize=blksize, windowsize=windowsize, timeout=timeout_option, tsize=announced)
        sock, server = await _open_client_socket(host, port)
        with sock:
            request = WriteRequest(remote, mode, requested).encode()
            reply = await _request(sock, server, request, timeout=timeout, retries=retries)
            peer, packet = reply.peer, reply.packet
            oack: OptionList | None = None
            if isinstance(packet, ErrorPacket):
                raise TftpRemoteError(packet.code, packet.message)
            if isinstance(packet, OptionAck):
                oack = packet.options
                try:
                    options = accept_oack(requested, oack)
                except TftpOptionError as exc:
                    raise await _fail(sock, peer, exc) from None
            elif isinstance(packet, Ack) and packet.block == 0:
                options = TransferOptions()
            else:
                raise await _fail(sock, peer, TftpProtocolError(f"server answered WRQ with {packet!r}"))
            sender = Sender(
                blksize=options.blksize,
                windowsize=options.windowsize,
                timeout=options.timeout or timeout,
                retries=retries,
                rollover=rollover,
                after_oack=oack is not None,
            )
            sender.retransmissions = reply.retransmissions
            eof = False
            read = 0

            def io_needed() -> bool:
                return not eof and sender.data_wanted() > 0

            def read_ahead() -> None:
                # Runs in a worker thread; the progress callback runs in Trio's.
                nonlocal eof, read
                while not eof and (wanted := sender.data_wanted()) > 0:
                    chunk = file.read(max(wanted, IO_CHUNK))
                    if not chunk:
                        eof = True
                        sender.feed_eof()
                    else:
                        read += len(chunk)
                        sender.feed(encode_netascii(chunk) if netascii else chunk)
                if on_progress is not None:
                    trio.from_thread.run_sync(on_progress, min(read, sender.bytes_acked), size)

            await trio.to_thread.run_sync(read_ahead)
            await _run(sock, peer, sender, sender.start, io_needed, read_ahead, 2048)
            if on_progress is not None:
                on_progress(read, size)
    finally:
        if opened:
            file.close()
    return TransferInfo(
        size=read,
        options=options,
        oack=oack,
        retransmissions=sender.retransmissions,
        server=(peer[0], peer[1]),
        elapsed=trio.current_time() - started,
    )
