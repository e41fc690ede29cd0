"""``harness serve command`` and ``harness command``."""

from __future__ import annotations

import argparse
import ipaddress
import ssl
import sys
from functools import partial
from pathlib import Path

import trio

from harness._kit.addresses import parse_hostport
from harness._kit.commands import (
    SubParsers,
    add_client_tls_option,
    add_seconds_option,
    add_server_command,
    add_stream_server_limits,
    client_tls_context,
    serve_from_args,
)
from harness._kit.errors import UsageError
from harness._kit.framing import MAX_FRAME_LENGTH
from harness.command import DEFAULT_PORT
from harness.command.builtins import BUILTINS
from harness.command.client import CommandClientError, CommandSession, open_command_stream
from harness.command.server import DEFAULT_IDLE_TIMEOUT, serve_command
from harness.command.wire import StreamName

# As ssh does: the command's own statuses are 0-255, so a failure of the connection itself gets the
# one a command is least likely to use.
CONNECTION_FAILED = 255
SHELL_WARNING = (
    "harness: WARNING: --shell runs every command line a client sends through /bin/sh, with this "
    "user's rights; anyone who can connect can do anything this user can. Loopback only."
)


def register(commands: SubParsers, serve_commands: SubParsers) -> None:
    serve = add_server_command(
        serve_commands,
        "command",
        help="run the reference remote-command server",
        description=(
            "Serve the command protocol (4-byte big-endian length, UTF-8 command line; replies with a "
            "JSON header, stdout, stderr). Runs the built-in commands "
            f"{', '.join(sorted(BUILTINS))} itself, never a shell, unless --shell. Runs until interrupted."
        ),
        handler=run_serve_command,
        default_port=DEFAULT_PORT,
        transport="TCP",
        tls=True,
    )
    serve.add_argument(
        "--root", type=Path, default=Path("."), metavar="DIR", help="the folder cat reads from (default: .)"
    )
    serve.add_argument(
        "--shell",
        action="store_true",
        help="run command lines through /bin/sh -c in --root, as the course notes do (dangerous; loopback only)",
    )
    add_stream_server_limits(
        serve,
        idle_timeout=DEFAULT_IDLE_TIMEOUT,
        idle_help=(
            "close a connection that sends no command, or reads none of a reply, this long (default: %(default)s)"
        ),
    )

    client = commands.add_parser(
        "command",
        help="run a command on a command server, or a session of them",
        description=(
            "Run COMMAND on the server at HOST:PORT and show its output as a terminal would (stdout to "
            "stdout, stderr to stderr), exiting with its status. Without COMMAND, run each line read from "
            f"stdin in turn, exiting with the last one's status. Exits {CONNECTION_FAILED} when the "
            "connection fails."
        ),
    )
    client.add_argument("address", metavar="HOST:PORT", help="the server, for example 127.0.0.1:9906")
    client.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="COMMAND",
        help="the command line: every word after HOST:PORT, joined by spaces (so options go before HOST:PORT)",
    )
    add_client_tls_option(client)
    add_seconds_option(
        client,
        "--timeout",
        default=None,
        help="give up after this long without a byte from the server (default: wait as long as the command runs)",
    )
    client.set_defaults(handler=run_command_client)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_serve_command(args: argparse.Namespace) -> int:
    if not args.root.is_dir():
        raise UsageError(f"--root {args.root} is not a folder")
    if args.shell:
        if not _is_loopback(args.host):
            raise UsageError(
                f"--shell refuses to listen on {args.host}: it would let anyone who can reach it run any "
                "command; use a loopback address (127.0.0.1, ::1)"
            )
        print(SHELL_WARNING, file=sys.stderr, flush=True)
    serve = partial(
        serve_command,
        root=args.root,
        shell=args.shell,
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
        max_connections_per_host=args.max_connections_per_host,
    )
    details = (f"root {args.root.resolve()}", "shell" if args.shell else "built-ins")
    return serve_from_args(args, serve, what="command", details=details, tls=True)


def _show(stream: StreamName, data: bytes) -> None:
    out = sys.stdout if stream == "stdout" else sys.stderr
    out.buffer.write(data)
    out.buffer.flush()


def _check_line(line: str) -> str | None:
    """Why ``line`` cannot be sent, or None."""
    size = len(line.encode("utf-8", "surrogateescape"))
    if not 1 <= size <= MAX_FRAME_LENGTH:
        return f"a command line must be 1-{MAX_FRAME_LENGTH} bytes of UTF-8, not {size}"
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return "the command line is not valid UTF-8"
    return None


async def _read_line() -> bytes:
    # A worker thread: stdin may be a terminal or a pipe that Trio cannot poll portably.
    return await trio.to_thread.run_sync(sys.stdin.buffer.readline, abandon_on_cancel=True)


async def _session(
    host: str, port: int, line: str | None, ssl_context: ssl.SSLContext | None, timeout: float | None
) -> int:
    stream = await open_command_stream(host, port, ssl_context=ssl_context)
    async with stream:
        session = CommandSession(stream, timeout=timeout)
        if line is not None:
            return await session.run(line, _show)
        status = 0
        prompt = sys.stdin.isatty()
        while True:
            if prompt:
                sys.stderr.write(f"{host}:{port}$ ")
                sys.stderr.flush()
            raw = await _read_line()
            if not raw:
                return status
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not text.strip():
                continue
            problem = _check_line(text)
            if problem is not None:
                print(f"harness: {problem}", file=sys.stderr)
                status = 2
                continue
            status = await session.run(text, _show)


def run_command_client(args: argparse.Namespace) -> int:
    host, port = parse_hostport(args.address)
    line = " ".join(args.command) if args.command else None
    if line is not None and (problem := _check_line(line)) is not None:
        raise UsageError(problem)
    ssl_context = client_tls_context(args)
    try:
        status = trio.run(_session, host, port, line, ssl_context, args.timeout)
    except CommandClientError as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return CONNECTION_FAILED
    # A status outside 0-255 cannot be an exit status; a shell would take it modulo 256.
    return status % 256
