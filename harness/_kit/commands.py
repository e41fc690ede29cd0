"""The command-line parts every ``harness serve PROTOCOL`` shares.

A protocol's ``cli`` module declares its server with :func:`add_server_command` (the address
options, and TLS or a root directory when it has them), adds its own options to the parser it
gets back, and runs with :func:`serve_from_args`, which checks the shared options, binds the
address and goes through :func:`harness._kit.serving.run_server`.
"""

from __future__ import annotations

import argparse
import ssl
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeAlias

from harness._kit.addresses import check_port
from harness._kit.admission import MAX_CONNECTIONS, MAX_CONNECTIONS_PER_HOST
from harness._kit.errors import UsageError
from harness._kit.serving import describe_error, run_server
from harness._kit.tls import server_context_from_files

__all__ = [
    "Handler",
    "SubParsers",
    "add_client_tls_option",
    "add_server_command",
    "client_tls_context",
    "serve_from_args",
]

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler: TypeAlias = Callable[[argparse.Namespace], int]


def add_server_command(
    serve_commands: SubParsers,
    name: str,
    *,
    help: str,
    description: str,
    handler: Handler,
    default_port: int,
    transport: str,
    default_host: str = "127.0.0.1",
    host_option: str = "--host",
    host_help: str = "address to listen on",
    port_note: str = "0 picks a free one",
    tls: bool = False,
    root_help: str | None = None,
) -> argparse.ArgumentParser:
    """``harness serve NAME`` with ``--host`` (or ``host_option``; ``args.host`` either way) and ``--port``.

    ``transport`` names the port's kind in the help (``UDP``, ``TCP``). With ``tls``, also
    ``--tls-cert``/``--tls-key`` (``serve_from_args(..., tls=True)`` reads them); with ``root_help``,
    a required ``--root DIR`` (a :class:`~pathlib.Path`). Returns the sub-command's parser, for the
    protocol's own options.
    """
    parser = serve_commands.add_parser(name, help=help, description=description)
    parser.add_argument(
        host_option, dest="host", default=default_host, metavar="HOST", help=f"{host_help} (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=default_port, help=f"{transport} port (default: %(default)s; {port_note})"
    )
    if root_help is not None:
        parser.add_argument("--root", type=Path, required=True, metavar="DIR", help=f"{root_help} (required)")
    if tls:
        parser.add_argument(
            "--tls-cert", type=Path, metavar="CERT", help="PEM certificate chain: serve TLS (needs --tls-key)"
        )
        parser.add_argument("--tls-key", type=Path, metavar="KEY", help="PEM private key for --tls-cert")
    parser.set_defaults(handler=handler)
    return parser


def add_client_tls_option(parser: argparse.ArgumentParser) -> None:
    """``--tls-ca PEM`` for a client: talk TLS, trusting the CA certificates in that file."""
    parser.add_argument("--tls-ca", type=Path, metavar="PEM", help="use TLS, trusting the CA certificates in this file")


def client_tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The client context for ``--tls-ca``, None for plain TCP; :class:`UsageError` when unusable."""
    if args.tls_ca is None:
        return None
    try:
        return ssl.create_default_context(cafile=str(args.tls_ca))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load --tls-ca {args.tls_ca}: {describe_error(exc)}") from None


def serve_from_args(
    args: argparse.Namespace,
    serve: Callable[..., Awaitable[None]],
    *,
    what: str,
    details: Sequence[str] = (),
    host_keyword: str = "host",
    tls: bool = False,
) -> int:
    """Run ``serve(host=args.host, port=args.port, task_status=...)`` until SIGINT or SIGTERM.

    ``host_keyword`` is the name ``serve`` gives its address parameter. With ``tls`` (a server
    added with ``tls=True``), ``serve`` also gets ``ssl_context=``, from ``--tls-cert``/``--tls-key``
    or None for plain TCP, and the details start with ``TLS`` or ``TCP``. Announces
    ``serving WHAT on HOST:PORT (DETAILS)``; exit status 0 when stopped, 1 when the port cannot be bound.
    """
    check_port(args.port)
    keywords: dict[str, object] = {host_keyword: args.host, "port": args.port}
    if tls:
        ssl_context = server_context_from_files(args.tls_cert, args.tls_key)
        keywords["ssl_context"] = ssl_context
        details = ("TLS" if ssl_context else "TCP", *details)
    return run_server(partial(serve, **keywords), what, args.host, args.port, details)


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def positive_number(text: str) -> float:
    """An argparse ``type``: a number above 0 (seconds, a rate)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: it must be more than 0")
    return value


def add_seconds_option(
    parser: argparse.ArgumentParser, flag: str, *, default: float | None, help: str, metavar: str = "SECONDS"
) -> None:
    """A timeout option: a number of seconds above 0, its default shown in the help."""
    parser.add_argument(flag, type=positive_number, default=default, metavar=metavar, help=help)


def add_stream_server_limits(parser: argparse.ArgumentParser, *, idle_timeout: float, idle_help: str) -> None:
    """What every stream server bounds: ``--idle-timeout`` and the connections at once."""
    add_seconds_option(parser, "--idle-timeout", default=idle_timeout, help=idle_help)
    add_connection_limit_options(parser)


def add_connection_limit_options(parser: argparse.ArgumentParser) -> None:
    """``--max-connections`` and ``--max-connections-per-host`` for a stream server (see admission)."""
    parser.add_argument(
        "--max-connections",
        type=_at_least_one,
        default=MAX_CONNECTIONS,
        metavar="N",
        help="connections at once; more are closed at once (default: %(default)s)",
    )
    parser.add_argument(
        "--max-connections-per-host",
        type=_at_least_one,
        default=MAX_CONNECTIONS_PER_HOST,
        metavar="N",
        help="connections at once from one IP address (default: %(default)s)",
    )
