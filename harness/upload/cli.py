"""``harness serve upload`` and ``harness upload``."""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path
from typing import TextIO

import trio

from harness._kit.addresses import parse_hostport
from harness._kit.commands import (
    SubParsers,
    add_client_tls_option,
    add_server_command,
    add_stream_server_limits,
    client_tls_context,
    positive_number,
    serve_from_args,
)
from harness._kit.errors import UsageError
from harness.upload import DEFAULT_PORT
from harness.upload.client import DEFAULT_TIMEOUT, UploadClientError, stat_file, upload_files
from harness.upload.names import file_name_problem
from harness.upload.server import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_SIZE, DEFAULT_MIN_RATE, serve_upload
from harness.upload.wire import FileInfo, Reply

# Smaller files finish too fast for a progress line to help.
PROGRESS_MIN_SIZE = 1024 * 1024
# Redraw the progress line at most this often (seconds), so a fast upload does not flood a terminal.
PROGRESS_INTERVAL = 0.2

_SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """A byte count such as ``1048576``, ``512K``, ``10M`` or ``2G`` (binary multiples)."""
    cleaned = text.strip().upper().removesuffix("B").removesuffix("I")
    number, suffix = cleaned, ""
    if cleaned and cleaned[-1] in _SIZE_SUFFIXES:
        number, suffix = cleaned[:-1], cleaned[-1]
    try:
        value = int(number) * _SIZE_SUFFIXES[suffix]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size in bytes (for example 1048576 or 10M)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a size cannot be negative")
    return value


def register(commands: SubParsers, serve_commands: SubParsers) -> None:
    serve = add_server_command(
        serve_commands,
        "upload",
        help="run the reference framed-upload server",
        description=(
            "Serve the framed upload protocol (4-byte big-endian length, JSON header, file bytes) and "
            "store uploaded files under --root, atomically. Runs until interrupted (Ctrl-C or SIGTERM)."
        ),
        handler=run_server,
        default_port=DEFAULT_PORT,
        transport="TCP",
        tls=True,
        root_help="folder to store files in",
    )
    serve.add_argument(
        "--max-size",
        type=parse_size,
        default=DEFAULT_MAX_SIZE,
        metavar="BYTES",
        help="largest file accepted, e.g. 10M or 2G; larger puts get too_large (default: 1T)",
    )
    add_stream_server_limits(
        serve,
        idle_timeout=DEFAULT_IDLE_TIMEOUT,
        idle_help=(
            "a request must arrive within this long of the previous reply, plus 1 s per --min-rate "
            "bytes (default: %(default)s)"
        ),
    )
    serve.add_argument(
        "--min-rate",
        type=positive_number,
        default=DEFAULT_MIN_RATE,
        metavar="BYTES_PER_S",
        help="the slowest a request may arrive, after --idle-timeout's grace (default: %(default)g)",
    )
    serve.set_defaults(handler=run_server)

    upload = commands.add_parser(
        "upload",
        help="upload files to an upload server, or --stat a stored one",
        description=(
            "Upload FILEs to an upload server, pipelined on one connection, or ask it about a stored file "
            "with --stat. Prints one line per file; exits 1 if any failed."
        ),
    )
    upload.add_argument("address", metavar="HOST:PORT", help="the server, for example 127.0.0.1:9904")
    upload.add_argument("files", nargs="*", type=Path, metavar="FILE", help="local files to upload")
    upload.add_argument("--name", metavar="NAME", help="remote name for a single FILE (default: its base name)")
    upload.add_argument("--stat", metavar="NAME", help="ask for the size and md5 of the stored file NAME")
    add_client_tls_option(upload)
    upload.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    upload.add_argument(
        "--timeout",
        type=positive_number,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="give up after this long without progress (default: %(default)s)",
    )
    upload.set_defaults(handler=run_upload)


def run_server(args: argparse.Namespace) -> int:
    root: Path = args.root
    if root.exists() and not root.is_dir():
        raise UsageError(f"--root {root} is not a folder")
    serve = functools.partial(
        serve_upload,
        root=root,
        max_size=args.max_size,
        idle_timeout=args.idle_timeout,
        min_rate=args.min_rate,
        max_connections=args.max_connections,
        max_connections_per_host=args.max_connections_per_host,
    )
    return serve_from_args(args, serve, what="upload", details=(f"root {root}",), tls=True)


class ProgressLine:
    """One self-overwriting line per large file on ``stream``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._last_draw = 0.0
        self._line_open = False

    def end_line(self) -> None:
        """End a line left open by a transfer that stopped, before anything else is printed."""
        if self._line_open:
            self.stream.write("\n")
            self.stream.flush()
            self._line_open = False

    def __call__(self, file_name: str, sent: int, size: int) -> None:
        if size < PROGRESS_MIN_SIZE:
            return
        now = time.monotonic()
        done = sent >= size
        if not done and sent and now - self._last_draw < PROGRESS_INTERVAL:
            return
        self._last_draw = now
        mib = 1024 * 1024
        self.stream.write(f"\r{file_name}: {100 * sent // size:3d}% ({sent / mib:.1f} of {size / mib:.1f} MiB)")
        self._line_open = not done
        if done:
            self.stream.write("\n")
        self.stream.flush()


def _print_reply(name: str, reply: Reply) -> bool:
    """Print one file's outcome; return whether it succeeded."""
    if isinstance(reply, FileInfo):
        print(f"{reply.file_name}: {reply.file_size} bytes, md5 {reply.md5}")
        return True
    print(f"{name}: {reply.error}: {reply.message}", file=sys.stderr)
    return False


def _upload_pairs(files: list[Path], name: str | None) -> list[tuple[Path, str]]:
    if name is not None and len(files) != 1:
        raise UsageError(f"--name gives one remote name, but there are {len(files)} FILEs; upload them one by one")
    pairs = []
    for path in files:
        if not path.is_file():
            raise UsageError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
        if not os.access(path, os.R_OK):
            raise UsageError(f"{path}: not readable")
        remote = name if name is not None else path.name
        problem = file_name_problem(remote)
        if problem is not None:
            raise UsageError(f"{remote!r} cannot be a remote name: {problem}; choose one with --name")
        pairs.append((path, remote))
    return pairs


def run_upload(args: argparse.Namespace) -> int:
    host, port = parse_hostport(args.address)
    ssl_context = client_tls_context(args)
    if args.stat is not None:
        if args.files:
            raise UsageError("give either FILEs to upload or --stat NAME, not both")
        if args.name is not None:
            raise UsageError("--name is for uploads; --stat takes the name itself")
        problem = file_name_problem(args.stat)
        if problem is not None:
            raise UsageError(f"--stat {args.stat!r}: {problem}")
        try:
            reply = trio.run(
                functools.partial(stat_file, host, port, args.stat, ssl_context=ssl_context, timeout=args.timeout)
            )
        except UploadClientError as exc:
            print(f"harness: {exc}", file=sys.stderr)
            return 1
        return 0 if _print_reply(args.stat, reply) else 1

    if not args.files:
        raise UsageError("give at least one FILE to upload, or --stat NAME")
    pairs = _upload_pairs(args.files, args.name)
    progress = ProgressLine(sys.stderr) if args.progress or sys.stderr.isatty() else None
    upload = functools.partial(
        upload_files, host, port, pairs, ssl_context=ssl_context, on_progress=progress, timeout=args.timeout
    )
    try:
        replies = trio.run(upload)
        failure = None
    except UploadClientError as exc:
        replies, failure = exc.replies, exc
    finally:
        if progress is not None:
            progress.end_line()
    # Every reply is printed, so no short-circuiting all() over a generator.
    outcomes = [_print_reply(remote, reply) for (_, remote), reply in zip(pairs, replies, strict=False)]
    ok = all(outcomes)
    if failure is not None:
        if replies:  # otherwise nothing was answered at all, and one line says why
            for _, remote in pairs[len(replies) :]:
                print(f"{remote}: no reply", file=sys.stderr)
        print(f"harness: {failure}", file=sys.stderr)
        return 1
    return 0 if ok else 1
