"""The reference TFTP server (RFC 1350 with options from RFC 2347, 2348, 2349 and 7440).

:func:`serve_tftp` listens on one UDP port and answers each RRQ or WRQ from a new socket (a
new transfer ID) in a task of its own, so transfers run side by side. What it promises:

* Files only under ``root``: absolute paths, ``..`` components and symlinks that resolve
  outside it are refused with ERROR 2; a missing file gets ERROR 1.
* Modes ``octet`` and ``netascii`` in any case; ``mail`` and anything else get ERROR 4.
* Options are negotiated as :mod:`harness.tftp.options` documents.
* Writes (only with ``allow_write``) go to a temporary file in the target directory, which is
  fsynced and renamed over the target only after the final DATA block. An existing file is
  thus replaced atomically (never ERROR 6); a failed or abandoned upload leaves no partial
  file and the old content intact.
* Nothing a peer sends ends the server: malformed datagrams get an ERROR and are forgotten.

Up to ``transfer_threads`` transfers run their packet loop in worker threads, beyond that in
Trio tasks (see :mod:`harness.tftp.endpoint`); either way each is cancelled with the server.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import trio

from harness._kit.addresses import Address
from harness._kit.bursts import BurstLog
from harness.tftp.blocks import check_rollover
from harness.tftp.endpoint import UdpSocket, open_tftp_socket, run_machine, send_quietly
from harness.tftp.errors import ErrorCode, TftpDecodeError, TftpRemoteError
from harness.tftp.files import PartialFile
from harness.tftp.machine import Receiver, Sender, State
from harness.tftp.netascii import NetasciiDecoder, encode_netascii
from harness.tftp.options import BLKSIZE_RANGE, Negotiation, negotiate
from harness.tftp.wire import (
    ErrorPacket,
    OptionAck,
    ReadRequest,
    Request,
    decode_packet,
    encode_ack,
    encode_error,
)

__all__ = ["DEFAULT_PORT", "MAX_TRANSFERS", "MAX_TRANSFERS_PER_HOST", "TRANSFER_THREADS", "serve_tftp"]

logger = logging.getLogger(__name__)

#: The well-known port 69 needs root; the reference server defaults to this one instead.
DEFAULT_PORT = 6969
#: Files are read and written in chunks this large: few system calls (or thread hops) per transfer.
IO_CHUNK = 256 * 1024
#: Transfers that run in worker threads at once; more run in Trio tasks, slower but unlimited.
#: Each thread mostly sleeps in a system call, so many cost little but memory.
TRANSFER_THREADS = 256
#: Largest request datagram we read; RFC 2347 caps requests at 512 octets, we are lenient.
_REQUEST_BUFSIZE = 65536
#: Receive buffer for ACKs and ERRORs on a sending transfer.
_ACK_BUFSIZE = 2048
_MODES = ("octet", "netascii")
#: Transfers at once, in all. An unanswered RRQ holds its socket and a read-ahead buffer for the
#: whole retry time (31 s by default): without a limit 3000 forged RRQs took 850 MB and 6010
#: descriptors. 512 keeps the server under the usual 1024 descriptors.
MAX_TRANSFERS = 512
#: Transfers at once from one IP address. Loopback clients share one address, and a conformance run
#: leaves many transfers waiting out their retries (64 refused the suite's own searches), so by
#: default one host may use every slot; lower it where the clients come from many addresses.
MAX_TRANSFERS_PER_HOST = 512
#: Longest ERROR text and logged name: a 16 KB request full of control bytes once made a 64 KB
#: ERROR (its repr) and a 64 KB log line.
_MAX_TEXT = 160
#: Longest path component most file systems take (NAME_MAX).
_NAME_MAX = 255


def _short(text: str) -> str:
    """``text`` cut to :data:`_MAX_TEXT` characters, for an ERROR or a log line."""
    return text if len(text) <= _MAX_TEXT else f"{text[: _MAX_TEXT - 20]}... ({len(text)} characters)"


def _error(code: int, message: str) -> bytes:
    return encode_error(code, _short(message))


class _Refusal(Exception):
    """A request the server turns down with ERROR ``code``."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


#: Lines about requests (refusals, ends of transfers) logged per 10 s; more are counted.
REQUEST_LINES = 30


@dataclass(frozen=True, slots=True)
class _Config:
    root: Path
    allow_write: bool
    rollover: int
    timeout: float
    retries: int
    max_blksize: int
    limiter: trio.CapacityLimiter
    max_transfers: int
    max_transfers_per_host: int
    #: A line per request (refused, ended) as a person trying a client sees them, but not one
    #: per datagram of a flood of requests.
    requests_log: BurstLog = field(default_factory=lambda: BurstLog(logger, allowance=REQUEST_LINES))


@dataclass
class _Transfers:
    """The transfers running now, and the log of refusals.

    ``latest`` holds each client address's newest request, to spot a repeated one; the counts
    are of running transfers, so that new requests from one port, each replacing the last in
    ``latest``, are still all counted.
    """

    latest: dict[Address, Request] = field(default_factory=dict)
    running: int = 0
    by_host: Counter[str] = field(default_factory=Counter)
    log: BurstLog = field(default_factory=lambda: BurstLog(logger))

    def busy_reason(self, host: str, config: _Config) -> str | None:
        if self.running >= config.max_transfers:
            return f"server busy: {config.max_transfers} transfers at once; try again later"
        if self.by_host[host] >= config.max_transfers_per_host:
            return f"server busy: {config.max_transfers_per_host} transfers from your address; try again later"
        return None

    def begin(self, key: Address, request: Request) -> None:
        self.latest[key] = request
        self.running += 1
        self.by_host[key[0]] += 1

    def end(self, key: Address, request: Request) -> None:
        if self.latest.get(key) is request:
            del self.latest[key]
        self.running -= 1
        self.by_host[key[0]] -= 1
        if not self.by_host[key[0]]:
            del self.by_host[key[0]]


async def serve_tftp(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    root: Path,
    allow_write: bool = False,
    rollover: int = 0,
    timeout: float = 1.0,
    retries: int = 5,
    max_blksize: int = 65464,
    transfer_threads: int = TRANSFER_THREADS,
    max_transfers: int = MAX_TRANSFERS,
    max_transfers_per_host: int = MAX_TRANSFERS_PER_HOST,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve files under ``root`` over TFTP on ``host``:``port`` until cancelled.

    Calls ``task_status.started(bound_port)`` once listening, so ``port=0`` works with
    ``await nursery.start(serve_tftp, ...)``. ``timeout`` (seconds; the client's negotiated
    timeout option replaces it) is the wait before the first retransmission; each further one
    waits twice as long as the previous, up to ``max(timeout, MAX_BACKOFF)`` (8 s), and
    progress resets the wait to ``timeout`` (:mod:`harness.tftp.machine`). After ``retries``
    retransmissions in a row without progress a transfer is abandoned: 31 s of silence with
    the defaults, then ERROR 0 "timed out: ..." to the client. ``rollover`` is the block
    number that follows 65535. ``max_blksize`` caps a negotiated blksize.
    ``transfer_threads`` transfers at most run in worker threads (fast); the others, and all
    with 0, run in Trio. Beyond ``max_transfers`` at once, or
    ``max_transfers_per_host`` from one IP address, a request gets ERROR 0 "server busy".
    """
    resolved_root = Path(root).resolve()
    if not resolved_root.is_dir():
        raise NotADirectoryError(f"TFTP root {str(root)!r} is not a directory")
    if timeout <= 0 or retries < 0:
        raise ValueError("timeout must be positive and retries non-negative")
    if max_blksize not in BLKSIZE_RANGE:
        raise ValueError(f"max_blksize {max_blksize} is out of range 8-65464")
    if transfer_threads < 0:
        raise ValueError("transfer_threads must be non-negative")
    if max_transfers < 1 or max_transfers_per_host < 1:
        raise ValueError("max_transfers and max_transfers_per_host must be at least 1")
    limiter = trio.CapacityLimiter(transfer_threads)
    config = _Config(
        resolved_root,
        allow_write,
        check_rollover(rollover),
        timeout,
        retries,
        max_blksize,
        limiter,
        max_transfers,
        max_transfers_per_host,
    )
    listener = await open_tftp_socket(host, port)
    with listener:
        local = listener.getsockname()
        active = _Transfers()
        async with trio.open_nursery() as nursery:
            logger.debug("serving TFTP on %s port %d from %s", local[0], local[1], resolved_root)
            task_status.started(local[1])
            while True:
                try:
                    datagram, client = await listener.recvfrom(_REQUEST_BUFSIZE)
                except OSError as exc:
                    logger.debug("receive on listening socket failed: %s", exc)
                    await trio.lowlevel.checkpoint()
                    continue
                try:
                    await _dispatch(listener, datagram, client, local[0], config, active, nursery)
                except Exception:  # a bug must not take the server down with it
                    logger.exception("error handling a datagram from %s", client[:2])


async def _dispatch(
    listener: UdpSocket,
    datagram: bytes,
    client: Address,
    local_host: str,
    config: _Config,
    active: _Transfers,
    nursery: trio.Nursery,
) -> None:
    try:
        packet = decode_packet(datagram)
    except TftpDecodeError as exc:
        active.log.log("malformed", trio.current_time(), "malformed request from %s: %s", client[:2], _short(str(exc)))
        await send_quietly(listener, _error(exc.error_code, str(exc)), client)
        return
    if isinstance(packet, ErrorPacket):
        return  # never answer an ERROR (RFC 1350 section 7)
    if not isinstance(packet, Request):
        message = f"only RRQ and WRQ are accepted on this port, not {packet.opcode.name}"
        await send_quietly(listener, _error(ErrorCode.ILLEGAL_OPERATION, message), client)
        return
    key = client[:2]
    if active.latest.get(key) == packet:
        # The client repeated its request before our first answer reached it: answering
        # again would start a second transfer that it must refuse with ERROR 5.
        logger.debug("repeated request from %s ignored", key)
        return
    busy = active.busy_reason(key[0], config)
    if busy is not None:
        active.log.log("busy", trio.current_time(), "%s from %s refused: %s", packet.opcode.name, key, busy)
        await send_quietly(listener, encode_error(ErrorCode.NOT_DEFINED, busy), client)
        return
    active.begin(key, packet)
    nursery.start_soon(_serve_request, packet, client, local_host, config, active)


async def _serve_request(
    request: Request, client: Address, local_host: str, config: _Config, active: _Transfers
) -> None:
    kind = request.opcode.name
    try:
        sock = await open_tftp_socket(local_host, 0)
        with sock:
            try:
                if isinstance(request, ReadRequest):
                    await _serve_read(sock, request, client, config)
                else:
                    await _serve_write(sock, request, client, config)
            except _Refusal as refusal:
                config.requests_log.log(
                    "refused",
                    trio.current_time(),
                    "%s %s from %s refused: %s",
                    kind,
                    _short(repr(request.filename)),
                    client[:2],
                    _short(refusal.message),
                )
                await send_quietly(sock, _error(refusal.code, refusal.message), client)
    except Exception:
        logger.exception("%s %s from %s crashed", kind, _short(repr(request.filename)), client[:2])
    finally:
        active.end(client[:2], request)


# --- path access ----------------------------------------------------------------------------


def _check_mode(request: Request) -> bool:
    """True for netascii, False for octet; refuse other modes."""
    mode = request.mode.lower()
    if mode not in _MODES:
        hint = "obsolete 'mail' mode" if mode == "mail" else f"mode {request.mode!r}"
        raise _Refusal(ErrorCode.ILLEGAL_OPERATION, f"{hint} is not supported; use octet or netascii")
    return mode == "netascii"


def _resolve(root: Path, filename: str) -> Path:
    """The real path of ``filename`` under ``root``, or a refusal with ERROR 2."""
    if not filename:
        raise _Refusal(ErrorCode.ACCESS_VIOLATION, "empty filename")
    relative = PurePosixPath(filename)
    if relative.is_absolute():
        raise _Refusal(ErrorCode.ACCESS_VIOLATION, "absolute paths are not allowed")
    if ".." in relative.parts:
        raise _Refusal(ErrorCode.ACCESS_VIOLATION, "'..' is not allowed in paths")
    if any(len(part.encode()) > _NAME_MAX for part in relative.parts):
        raise _Refusal(ErrorCode.ACCESS_VIOLATION, f"a path component is longer than {_NAME_MAX} bytes")
    try:
        resolved = (root / relative).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        raise _Refusal(ErrorCode.ACCESS_VIOLATION, "path cannot be resolved") from None
    if not resolved.is_relative_to(root):
        raise _Refusal(ErrorCode.ACCESS_VIOLATION, "path leads outside the served directory")
    return resolved


def _os_refusal(exc: OSError) -> _Refusal:
    if isinstance(exc, FileNotFoundError):
        return _Refusal(ErrorCode.FILE_NOT_FOUND, "file not found")
    if isinstance(exc, (PermissionError, IsADirectoryError)):
        return _Refusal(ErrorCode.ACCESS_VIOLATION, exc.strerror or "access denied")
    return _Refusal(ErrorCode.NOT_DEFINED, exc.strerror or str(exc))


def _open_for_read(root: Path, filename: str) -> tuple[BinaryIO, int]:
    path = _resolve(root, filename)
    try:
        # O_NONBLOCK: opening a FIFO must not hang the thread; we refuse non-files next.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _os_refusal(exc) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _Refusal(ErrorCode.ACCESS_VIOLATION, "not a regular file")
    return os.fdopen(fd, "rb", buffering=0), info.st_size


def _negotiate(request: Request, config: _Config, *, file_size: int | None) -> tuple[Negotiation, bytes | None]:
    negotiation = negotiate(
        request.options,
        is_read=isinstance(request, ReadRequest),
        file_size=file_size,
        max_blksize=config.max_blksize,
    )
    if negotiation.ignored:
        logger.debug("options left out of the OACK: %s", ", ".join(negotiation.ignored))
    first = OptionAck(negotiation.oack).encode() if negotiation.oack else None
    return negotiation, first


# --- RRQ ------------------------------------------------------------------------------------


async def _serve_read(sock: UdpSocket, request: Request, client: Address, config: _Config) -> None:
    netascii = _check_mode(request)
    file, size = await trio.to_thread.run_sync(_open_for_read, config.root, request.filename)
    started = trio.current_time()
    with file:
        negotiation, first = _negotiate(request, config, file_size=None if netascii else size)
        options = negotiation.options
        sender = Sender(
            blksize=options.blksize,
            windowsize=options.windowsize,
            timeout=options.timeout or config.timeout,
            retries=config.retries,
            rollover=config.rollover,
            first=first,
        )
        eof = False

        def io_needed() -> bool:
            return not eof and sender.data_wanted() > 0

        def read_ahead() -> None:
            nonlocal eof
            while not eof and (wanted := sender.data_wanted()) > 0:
                chunk = file.read(max(wanted, IO_CHUNK))
                if not chunk:
                    eof = True
                    sender.feed_eof()
                else:
                    sender.feed(encode_netascii(chunk) if netascii else chunk)

        try:
            await trio.to_thread.run_sync(read_ahead)
        except OSError as exc:
            raise _Refusal(ErrorCode.NOT_DEFINED, f"read error: {exc.strerror or exc}") from None
        try:
            await run_machine(
                sock,
                client,
                sender,
                begin=sender.start,
                io_needed=io_needed,
                do_io=read_ahead,
                bufsize=_ACK_BUFSIZE,
                limiter=config.limiter,
            )
        except OSError as exc:
            for datagram in sender.abort(ErrorCode.NOT_DEFINED, f"read error: {exc.strerror or exc}"):
                await send_quietly(sock, datagram, client)
    _log_end("RRQ", request, client, sender, options.blksize, started, config.requests_log)


def _log_end(
    kind: str,
    request: Request,
    client: Address,
    machine: Sender | Receiver,
    blksize: int,
    started: float,
    log: BurstLog,
) -> None:
    now = trio.current_time()
    elapsed = now - started
    name = _short(repr(request.filename))
    if machine.state is State.FAILED:
        error = machine.error
        if isinstance(error, TftpRemoteError) and error.code == ErrorCode.OPTION_NEGOTIATION:
            log.log("ended", now, "%s %s from %s: client declined the options (ERROR 8)", kind, name, client[:2])
        else:
            log.log("ended", now, "%s %s from %s failed: %s", kind, name, client[:2], _short(str(error)))
        return
    count = machine.bytes_acked if isinstance(machine, Sender) else machine.bytes_received
    log.log(
        "ended",
        now,
        "%s %s from %s: %d bytes, blksize %d, %d retransmissions, %.3f s",
        kind,
        name,
        client[:2],
        count,
        blksize,
        machine.retransmissions,
        elapsed,
    )


# --- WRQ ------------------------------------------------------------------------------------


def _write_error_code(exc: OSError) -> ErrorCode:
    return ErrorCode.DISK_FULL if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ErrorCode.NOT_DEFINED


def _open_for_write(root: Path, filename: str, tsize: int | None) -> PartialFile:
    target = _resolve(root, filename)
    parent = target.parent
    if not parent.is_dir():
        raise _Refusal(ErrorCode.FILE_NOT_FOUND, "directory does not exist")
    if target.is_dir():
        raise _Refusal(ErrorCode.ACCESS_VIOLATION, "target is a directory")
    if target.exists() and not target.is_file():
        raise _Refusal(ErrorCode.ACCESS_VIOLATION, "target is not a regular file")
    if tsize is not None and tsize > shutil.disk_usage(parent).free:
        raise _Refusal(ErrorCode.DISK_FULL, f"not enough space for {tsize} bytes")
    try:
        return PartialFile.create(target)
    except OSError as exc:
        raise _os_refusal(exc) from None


async def _serve_write(sock: UdpSocket, request: Request, client: Address, config: _Config) -> None:
    if not config.allow_write:
        raise _Refusal(ErrorCode.ACCESS_VIOLATION, "this server does not accept uploads")
    netascii = _check_mode(request)
    negotiation, first = _negotiate(request, config, file_size=None)
    options = negotiation.options
    partial = await trio.to_thread.run_sync(_open_for_write, config.root, request.filename, options.tsize)
    started = trio.current_time()
    try:
        receiver = Receiver(
            blksize=options.blksize,
            windowsize=options.windowsize,
            timeout=options.timeout or config.timeout,
            retries=config.retries,
            rollover=config.rollover,
            first=first if first is not None else encode_ack(0),
            hold_final_ack=True,
        )
        decoder = NetasciiDecoder() if netascii else None

        def io_needed() -> bool:
            return receiver.pending >= IO_CHUNK

        def drain(final: bool = False) -> None:
            data = receiver.take_data()
            if decoder is not None:
                data = decoder.feed(data) + (decoder.finish() if final else b"")
            if data:
                partial.write(data)

        def store() -> None:
            drain(final=True)
            partial.commit()

        async def abort(exc: OSError) -> None:
            for datagram in receiver.abort(_write_error_code(exc), f"write error: {exc.strerror or exc}"):
                await send_quietly(sock, datagram, client)

        bufsize = options.blksize + 5  # one byte more than allowed, to notice oversized DATA
        try:
            await run_machine(
                sock,
                client,
                receiver,
                begin=receiver.start,
                io_needed=io_needed,
                do_io=drain,
                bufsize=bufsize,
                limiter=config.limiter,
            )
        except OSError as exc:
            await abort(exc)
        if receiver.state is State.RECEIVED:
            try:
                await trio.to_thread.run_sync(store)
            except OSError as exc:
                await abort(exc)
            else:
                # Dallying is a few datagrams at most: this task can do it without a thread.
                await run_machine(sock, client, receiver, begin=receiver.confirm, bufsize=bufsize)
        _log_end("WRQ", request, client, receiver, options.blksize, started, config.requests_log)
    finally:
        partial.discard()
