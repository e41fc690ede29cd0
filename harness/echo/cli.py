"""``harness serve echo`` and ``harness echo``."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

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
from harness._kit.serving import describe_error, unwrap_single_exception
from harness._kit.stdin import LineReader, read_chunk
from harness._kit.udp import open_udp_socket
from harness.echo.client import (
    DATAGRAM_SIZE,
    EchoNotClosedError,
    echo_once,
    open_echo_stream,
    relay,
)
from harness.echo.server import HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, serve_echo_tcp, serve_echo_udp
from harness.echo.wire import TRANSFORMS

# RFC 862 reserves port 7, which needs privileges; 7007 is easy to remember and usually free.
DEFAULT_PORT = 7007

T = TypeVar("T")


def register(commands: SubParsers, serve_commands: SubParsers) -> None:
    serve = add_server_command(
        serve_commands,
        "echo",
        help="echo server (RFC 862) over TCP, TLS or UDP",
        description="Run the reference echo server until interrupted (Ctrl-C or SIGTERM). Every byte "
        "received is sent back; after the client's EOF the server closes its side.",
        handler=run_serve_echo,
        default_port=DEFAULT_PORT,
        transport="TCP or UDP",
        tls=True,
    )
    serve.add_argument("--udp", action="store_true", help="serve UDP datagrams instead of a TCP stream")
    serve.add_argument(
        "--transform",
        choices=sorted(TRANSFORMS),
        default="identity",
        help="identity echoes bytes unchanged; upper maps ASCII a-z to A-Z and keeps every other byte",
    )
    add_stream_server_limits(
        serve,
        idle_timeout=IDLE_TIMEOUT,
        idle_help=(
            "TCP: close a connection that sends nothing, or reads none of its echo, this long (default: %(default)s)"
        ),
    )
    add_seconds_option(
        serve,
        "--handshake-timeout",
        default=HANDSHAKE_TIMEOUT,
        help="TLS: close a connection whose handshake is not done this long after it opened (default: %(default)s)",
    )

    client = commands.add_parser(
        "echo",
        help="send messages (or stdin) to an echo server and print what comes back",
        description="With MESSAGEs, send each one (on its own TCP connection, or as one datagram) "
        "and print each reply, escaped unless it is printable UTF-8. Without MESSAGEs, TCP relays "
        "stdin to the server and the echo to stdout until the server closes after our EOF; "
        "UDP sends each stdin line as one datagram and prints the reply.",
        epilog="Options go before HOST:PORT or after the last MESSAGE, not between messages.",
    )
    client.add_argument("address", metavar="HOST:PORT", help="the echo server")
    client.add_argument("messages", metavar="MESSAGE", nargs="*", help="messages to send (UTF-8)")
    client.add_argument("--udp", action="store_true", help="talk UDP instead of TCP")
    add_client_tls_option(client)
    add_seconds_option(
        client,
        "--timeout",
        default=5.0,
        help="seconds to wait for a connection, a reply, or the close after EOF (default: %(default)s)",
    )
    client.set_defaults(handler=run_echo_client)


# --- harness serve echo ------------------------------------------------------------------


def run_serve_echo(args: argparse.Namespace) -> int:
    if not args.udp:
        serve_tcp = functools.partial(
            serve_echo_tcp,
            transform=args.transform,
            idle_timeout=args.idle_timeout,
            handshake_timeout=args.handshake_timeout,
            max_connections=args.max_connections,
            max_connections_per_host=args.max_connections_per_host,
        )
        return serve_from_args(args, serve_tcp, what="echo", details=(args.transform,), tls=True)
    if args.tls_cert is not None or args.tls_key is not None:
        raise UsageError("TLS needs TCP: drop --udp or --tls-cert/--tls-key")
    serve_udp = functools.partial(serve_echo_udp, transform=args.transform)
    return serve_from_args(args, serve_udp, what="echo", details=("UDP", args.transform))


# --- harness echo ------------------------------------------------------------------------


def run_echo_client(args: argparse.Namespace) -> int:
    host, port = parse_hostport(args.address)
    timeout: float = args.timeout
    if args.udp and args.tls_ca is not None:
        raise UsageError("TLS needs TCP: drop --udp or --tls-ca")
    ssl_context = client_tls_context(args)
    where = f"{host}:{port}"

    async def session() -> None:
        if args.messages:
            for message in args.messages:
                reply = await echo_once(
                    host, port, os.fsencode(message), udp=args.udp, ssl_context=ssl_context, timeout=timeout
                )
                print(format_reply(reply), flush=True)
        elif args.udp:
            await _udp_lines(host, port, timeout)
        else:
            with trio.fail_after(timeout):
                stream = await open_echo_stream(host, port, ssl_context=ssl_context)
            async with stream:
                await relay(stream, _read_stdin, _write_stdout, close_timeout=timeout)

    try:
        _run(session)
    except trio.TooSlowError:
        print(f"harness: no answer from {where} within {timeout:g} s", file=sys.stderr)
    except EchoNotClosedError as exc:
        print(f"harness: {where}: {exc}", file=sys.stderr)
    except trio.BrokenResourceError as exc:
        print(f"harness: connection to {where} broken: {describe_error(exc)}", file=sys.stderr)
    except OSError as exc:
        print(f"harness: cannot reach {where}: {describe_error(exc)}", file=sys.stderr)
    else:
        return 0
    return 1


async def _udp_lines(host: str, port: int, timeout: float) -> None:
    lines = LineReader(sys.stdin.fileno())
    with await open_udp_socket(host, port, connect=True) as sock:
        while line := await lines.read_line():
            await sock.send(line.removesuffix(b"\n").removesuffix(b"\r"))
            with trio.fail_after(timeout):
                reply = await sock.recv(DATAGRAM_SIZE)
            print(format_reply(reply), flush=True)


def format_reply(data: bytes) -> str:
    """The reply as text when it is printable UTF-8, else as an escaped bytes literal."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return repr(data)
    return text if text.isprintable() else repr(data)


async def _read_stdin() -> bytes:
    return await read_chunk(sys.stdin.fileno())


async def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    await trio.lowlevel.checkpoint()


# --- shared ------------------------------------------------------------------------------


def _run(async_fn: Callable[[], Awaitable[T]]) -> T:
    """``trio.run``, re-raising a lone exception out of the nursery groups around it, so that
    callers (and ``harness.cli``'s KeyboardInterrupt handling) can catch it by type."""
    with unwrap_single_exception():
        return trio.run(async_fn)
