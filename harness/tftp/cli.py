"""``harness serve tftp`` and ``harness tftp get|put``."""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, TextIO

import trio

from harness._kit.addresses import parse_hostport
from harness._kit.commands import SubParsers, add_server_command, serve_from_args
from harness._kit.errors import UsageError
from harness.tftp.client import TransferInfo, tftp_get, tftp_put
from harness.tftp.errors import TftpError
from harness.tftp.machine import MAX_BACKOFF, total_wait
from harness.tftp.options import BLKSIZE_RANGE, TIMEOUT_RANGE, WINDOWSIZE_RANGE
from harness.tftp.server import DEFAULT_PORT, MAX_TRANSFERS, MAX_TRANSFERS_PER_HOST, serve_tftp

__all__ = ["register"]

#: Progress is redrawn at most this often, so that it costs nothing next to the transfer.
_PROGRESS_INTERVAL = 0.2


def register(commands: SubParsers, serve_commands: SubParsers) -> None:
    serve = add_server_command(
        serve_commands,
        "tftp",
        help="TFTP server (RFC 1350 with blksize, tsize, timeout and windowsize options)",
        description=(
            "Serve the files under --root over TFTP until interrupted (Ctrl-C or SIGTERM). Each transfer "
            "runs on a socket of its own; paths leading outside the root are refused. Uploads (WRQ) are "
            "refused unless --allow-write; an upload replaces the target atomically when complete."
        ),
        handler=_serve,
        default_port=DEFAULT_PORT,
        transport="UDP",
        port_note="0 picks a free one; the standard port 69 needs root privileges",
        root_help="directory to serve",
    )
    serve.add_argument("--allow-write", action="store_true", help="accept uploads (WRQ) into DIR")
    serve.add_argument(
        "--rollover",
        type=int,
        choices=(0, 1),
        default=0,
        help="block number that follows 65535 (default: %(default)s)",
    )
    serve.add_argument(
        "--timeout",
        type=float,
        default=1.0,
        metavar="S",
        help=(
            "seconds before the first retransmission, unless a client negotiates its own timeout; "
            f"each further one waits twice as long, up to {MAX_BACKOFF:g} s or S if longer (default: %(default)s)"
        ),
    )
    serve.add_argument(
        "--retries",
        type=int,
        default=5,
        metavar="N",
        help=(
            "retransmissions in a row without progress before a transfer is abandoned with ERROR 0 "
            "(default: %(default)s; with --timeout 1, after 31 s of silence)"
        ),
    )
    serve.add_argument(
        "--max-transfers",
        type=int,
        default=MAX_TRANSFERS,
        metavar="N",
        help="transfers at once; more requests get ERROR 0 'server busy' (default: %(default)s)",
    )
    serve.add_argument(
        "--max-transfers-per-host",
        type=int,
        default=MAX_TRANSFERS_PER_HOST,
        metavar="N",
        help="transfers at once from one IP address (default: %(default)s)",
    )
    serve.set_defaults(handler=_serve)

    tftp = commands.add_parser(
        "tftp",
        help="TFTP client: get or put a file",
        description="Download (get) or upload (put) one file with TFTP.",
    )
    actions = tftp.add_subparsers(dest="tftp_action", required=True, metavar="ACTION")
    get = actions.add_parser(
        "get",
        help="download REMOTE into LOCAL",
        description="Download REMOTE from the server into LOCAL (default: REMOTE's file name; '-' for stdout).",
    )
    get.add_argument("server", metavar="HOST:PORT", help="server address, e.g. 127.0.0.1:6969")
    get.add_argument("remote", metavar="REMOTE", help="file name on the server")
    get.add_argument("local", metavar="LOCAL", nargs="?", help="local file to write (atomically)")
    _add_client_options(get)
    get.set_defaults(handler=_get)
    put = actions.add_parser(
        "put",
        help="upload LOCAL as REMOTE",
        description="Upload LOCAL (default: REMOTE as a local path; '-' for stdin) to the server as REMOTE.",
    )
    put.add_argument("server", metavar="HOST:PORT", help="server address, e.g. 127.0.0.1:6969")
    put.add_argument("remote", metavar="REMOTE", help="file name on the server")
    put.add_argument("local", metavar="LOCAL", nargs="?", help="local file to send")
    _add_client_options(put)
    put.set_defaults(handler=_put)


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=("octet", "netascii"), default="octet", help="transfer mode (default: octet)")
    parser.add_argument("--blksize", type=int, metavar="N", help="request block size N (RFC 2348, 8-65464)")
    parser.add_argument("--windowsize", type=int, metavar="N", help="request window size N (RFC 7440, 1-65535)")
    parser.add_argument("--tsize", action="store_true", help="request / announce the transfer size (RFC 2349)")
    parser.add_argument(
        "--request-timeout",
        type=int,
        metavar="N",
        help="ask the server to retransmit after N seconds (RFC 2349 timeout option, 1-255)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1.0,
        metavar="S",
        help=(
            "seconds before the first retransmission of the request, a DATA or an ACK (a --request-timeout "
            f"the server accepts replaces it); each further one waits twice as long, up to {MAX_BACKOFF:g} s "
            "or S if longer (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=5,
        metavar="N",
        help="retransmissions in a row without progress before giving up (default: %(default)s; 31 s with --timeout 1)",
    )
    parser.add_argument(
        "--rollover",
        type=int,
        choices=(0, 1),
        default=0,
        help="block number expected after 65535 (default: %(default)s)",
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show progress on stderr (shown anyway when stderr is a terminal)",
    )


# --- serve ----------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    root: Path = args.root
    if not root.is_dir():
        raise UsageError(f"--root {str(root)!r} is not a directory")
    if args.timeout <= 0 or args.retries < 0:
        raise UsageError("--timeout must be positive and --retries at least 0")
    if args.max_transfers < 1 or args.max_transfers_per_host < 1:
        raise UsageError("--max-transfers and --max-transfers-per-host must be at least 1")
    serve = functools.partial(
        serve_tftp,
        root=root,
        allow_write=args.allow_write,
        rollover=args.rollover,
        timeout=args.timeout,
        retries=args.retries,
        max_transfers=args.max_transfers,
        max_transfers_per_host=args.max_transfers_per_host,
    )
    access = "uploads allowed" if args.allow_write else "read-only"
    return serve_from_args(args, serve, what="tftp", details=(f"root {root.resolve()}", access))


# --- client ---------------------------------------------------------------------------------


def _check_client_args(args: argparse.Namespace) -> tuple[str, int]:
    host, port = parse_hostport(args.server)
    if port == 0:
        raise UsageError(f"{args.server!r}: port 0 cannot be a server port")
    checks: list[tuple[str, int | None, range]] = [
        ("--blksize", args.blksize, BLKSIZE_RANGE),
        ("--windowsize", args.windowsize, WINDOWSIZE_RANGE),
        ("--request-timeout", args.request_timeout, TIMEOUT_RANGE),
    ]
    for flag, value, valid in checks:
        if value is not None and value not in valid:
            raise UsageError(f"{flag} {value} is out of range {valid.start}-{valid.stop - 1}")
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g} must be positive")
    if args.retries < 0:
        raise UsageError(f"--retries {args.retries} must be at least 0")
    return host, port


class _Progress:
    """A one-line progress display on stderr, redrawn at most every :data:`_PROGRESS_INTERVAL`."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self._label = label
        self._stream = stream
        self._last = 0.0
        self._shown = False

    def waiting(self, host: str, port: int, seconds: float) -> None:
        """Say who is being asked, until the first progress replaces it: a silent server
        is only given up on after ``seconds``."""
        self._stream.write(f"\r{self._label}: waiting for {host} port {port} (up to {seconds:g} s)\x1b[K")
        self._stream.flush()
        self._shown = True

    def update(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self._last < _PROGRESS_INTERVAL:
            return
        self._last = now
        self._draw(done, total)

    def _draw(self, done: int, total: int | None) -> None:
        if total:
            text = f"{self._label}: {_size(done)} of {_size(total)} ({100 * done // total}%)"
        else:
            text = f"{self._label}: {_size(done)}"
        self._stream.write(f"\r{text}\x1b[K")
        self._stream.flush()
        self._shown = True

    def finish(self, info: TransferInfo) -> None:
        rate = info.size / info.elapsed if info.elapsed > 0 else 0.0
        self._stream.write(
            f"\r{self._label}: {_size(info.size)} in {info.elapsed:.2f} s ({_size(int(rate))}/s), "
            f"blksize {info.options.blksize}, windowsize {info.options.windowsize}, "
            f"{info.retransmissions} retransmissions\x1b[K\n"
        )
        self._stream.flush()

    def abandon(self) -> None:
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _progress(args: argparse.Namespace, label: str) -> _Progress | None:
    if args.progress or sys.stderr.isatty():
        return _Progress(label, sys.stderr)
    return None


def _run_client(args: argparse.Namespace, label: str, transfer: Callable[[_Progress | None], TransferInfo]) -> int:
    progress = _progress(args, label)
    if progress is not None:
        host, port = _check_client_args(args)
        progress.waiting(host, port, total_wait(args.timeout, args.retries))
    try:
        info = transfer(progress)
    except (TftpError, OSError) as exc:
        if progress is not None:
            progress.abandon()
        reason = str(exc) if isinstance(exc, TftpError) else (exc.strerror or str(exc))
        filename = f": {exc.filename}" if isinstance(exc, OSError) and exc.filename else ""
        print(f"harness: {label} failed: {reason}{filename}", file=sys.stderr)
        return 1
    if progress is not None:
        progress.finish(info)
    return 0


def _transfer_options(args: argparse.Namespace, progress: _Progress | None) -> dict[str, Any]:
    """The keyword arguments that ``tftp_get`` and ``tftp_put`` share, from the client options."""
    return {
        "mode": args.mode,
        "blksize": args.blksize,
        "windowsize": args.windowsize,
        "timeout": args.timeout,
        "retries": args.retries,
        "tsize": args.tsize,
        "timeout_option": args.request_timeout,
        "rollover": args.rollover,
        "on_progress": None if progress is None else progress.update,
    }


def _get(args: argparse.Namespace) -> int:
    host, port = _check_client_args(args)
    local: str = args.local or PurePosixPath(args.remote).name
    if not local:
        raise UsageError(f"cannot name a local file after {args.remote!r}; give LOCAL")
    sink: BinaryIO | Path
    if local == "-":
        sink = sys.stdout.buffer
    else:
        sink = Path(local)
        if sink.is_dir():
            raise UsageError(f"LOCAL {local!r} is a directory; name a file")
        if not sink.parent.is_dir():
            raise UsageError(f"directory {str(sink.parent)!r} for LOCAL does not exist")

    def transfer(progress: _Progress | None) -> TransferInfo:
        return trio.run(
            functools.partial(
                tftp_get,
                host,
                port,
                args.remote,
                sink,
                **_transfer_options(args, progress),
            )
        )

    return _run_client(args, f"get {args.remote!r} from {host}:{port}", transfer)


def _put(args: argparse.Namespace) -> int:
    host, port = _check_client_args(args)
    local: str = args.local or args.remote
    source: BinaryIO | Path
    if local == "-":
        source = sys.stdin.buffer
    else:
        source = Path(local)
        if not source.is_file():
            raise UsageError(f"local file {local!r} does not exist or is not a regular file")
        if not os.access(source, os.R_OK):
            raise UsageError(f"local file {local!r} is not readable")

    def transfer(progress: _Progress | None) -> TransferInfo:
        return trio.run(
            functools.partial(
                tftp_put,
                host,
                port,
                args.remote,
                source,
                **_transfer_options(args, progress),
            )
        )

    return _run_client(args, f"put {args.remote!r} to {host}:{port}", transfer)
