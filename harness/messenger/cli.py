"""Command line: ``serve chat``, ``chat``, ``serve broadcast`` and ``discover``."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio

from harness._kit.addresses import parse_hostport
from harness._kit.errors import UsageError
from harness.broadcast.machine import DEFAULT_BROADCAST_PORT, DiscoveredPeer
from harness.broadcast.server import DEFAULT_BROADCAST_ADDRESS, discover, serve_presence
from harness.chat.client import run_terminal_chat, unwrap_single_exception
from harness.chat.machine import DEFAULT_MAX_RETRANSMITS, DEFAULT_RETRANSMIT_INTERVAL
from harness.chat.server import DEFAULT_CHAT_PORT, serve_chat

__all__ = ["register"]

_NAME_HELP = "non-empty, without ':'"


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    serve_commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    chat_server = serve_commands.add_parser(
        "chat",
        help="run the UDP chat room server",
        description="Relay messages between the members of one chat room (UDP, IP Messenger datagrams). "
        "Stops cleanly on SIGINT or SIGTERM.",
    )
    chat_server.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; "
                             "0.0.0.0 for all interfaces)")
    chat_server.add_argument("--port", type=int, default=DEFAULT_CHAT_PORT,
                             help=f"UDP port (default {DEFAULT_CHAT_PORT}; 0 picks a free one)")
    _add_retransmit_options(chat_server, what="an unacknowledged relay")
    chat_server.add_argument("--relay-window", type=int, metavar="N",
                             help="at most N unacknowledged relays per member (default: no limit, "
                             "relays are pipelined; 1 gives stop-and-wait, strict order under loss)")
    chat_server.add_argument("--server-host", metavar="NAME",
                             help="the host field of the server's datagrams (default: this machine's name)")
    chat_server.set_defaults(handler=_serve_chat)

    chat = commands.add_parser(
        "chat",
        help="join a chat room from the terminal",
        description="Join the chat room at HOST:PORT: each line you type is sent, and messages from "
        "others are printed as 'name: text'. End of input (Ctrl-D) or Ctrl-C leaves the room.",
    )
    chat.add_argument("server", metavar="HOST:PORT", help="the chat server, e.g. 127.0.0.1:8081")
    chat.add_argument("--name", required=True, help=f"your nickname ({_NAME_HELP})")
    _add_retransmit_options(chat, what="an unacknowledged message")
    chat.set_defaults(handler=_chat)

    responder = serve_commands.add_parser(
        "broadcast",
        help="run the UDP broadcast presence responder",
        description="Answer broadcast 'who is online' queries (BR_ENTRY) with a unicast ANSENTRY. "
        "Announces itself on start and broadcasts BR_EXIT on SIGINT or SIGTERM.",
    )
    responder.add_argument("--port", type=int, default=DEFAULT_BROADCAST_PORT,
                           help=f"UDP port, bound on all addresses (default {DEFAULT_BROADCAST_PORT})")
    responder.add_argument("--name", required=True, help=f"the name to announce ({_NAME_HELP})")
    responder.add_argument("--broadcast-address", default=DEFAULT_BROADCAST_ADDRESS, metavar="A",
                           help=f"where announcements go (default {DEFAULT_BROADCAST_ADDRESS}, loopback; "
                           "e.g. 192.168.1.255 or 255.255.255.255 on a LAN)")
    responder.add_argument("--bind-host", default="0.0.0.0",
                           help="address to bind (default 0.0.0.0: needed to receive broadcasts)")
    responder.set_defaults(handler=_serve_broadcast)

    finder = commands.add_parser(
        "discover",
        help="broadcast a presence query and list who answered",
        description="Broadcast one BR_ENTRY and print the responders that answered within the wait, "
        "with their address, name and round-trip time.",
    )
    finder.add_argument("--port", type=int, default=DEFAULT_BROADCAST_PORT,
                        help=f"the responders' UDP port (default {DEFAULT_BROADCAST_PORT})")
    finder.add_argument("--wait", type=float, default=1.0, metavar="S",
                        help="seconds to collect answers (default 1)")
    finder.add_argument("--broadcast-address", default=DEFAULT_BROADCAST_ADDRESS, metavar="A",
                        help=f"where the query goes (default {DEFAULT_BROADCAST_ADDRESS})")
    finder.add_argument("--name", default="discover", help=f"the querier's name ({_NAME_HELP})")
    finder.set_defaults(handler=_discover)


def _add_retransmit_options(parser: argparse.ArgumentParser, *, what: str) -> None:
    parser.add_argument("--retransmit-interval", type=float, default=DEFAULT_RETRANSMIT_INTERVAL, metavar="S",
                        help=f"seconds between retransmissions of {what} (default {DEFAULT_RETRANSMIT_INTERVAL})")
    parser.add_argument("--max-retransmits", type=int, default=DEFAULT_MAX_RETRANSMITS, metavar="N",
                        help=f"retransmissions before giving up (default {DEFAULT_MAX_RETRANSMITS})")


# Validation -------------------------------------------------------------------------------------


def _check_name(name: str, option: str = "--name") -> None:
    if not name:
        raise UsageError(f"{option} must not be empty")
    if ":" in name:
        raise UsageError(f"{option} {name!r} must not contain ':' (it separates the datagram's fields)")


def _check_port(port: int, *, allow_zero: bool) -> None:
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise UsageError(f"--port {port} is out of range {low}-65535")


def _check_retransmits(args: argparse.Namespace) -> None:
    if not args.retransmit_interval > 0:
        raise UsageError(f"--retransmit-interval must be positive, not {args.retransmit_interval:g}")
    if args.max_retransmits < 0:
        raise UsageError(f"--max-retransmits must be 0 or more, not {args.max_retransmits}")


def _check_broadcast_address(address: str) -> None:
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise UsageError(
            f"--broadcast-address {address!r} is not an IPv4 address (for example 127.255.255.255)"
        ) from None


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")


# Handlers ---------------------------------------------------------------------------------------


async def _serve_until_signal(serve: Callable[..., Awaitable[None]]) -> None:
    """Run a server; SIGINT or SIGTERM cancels it, which is its clean shutdown."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals, unwrap_single_exception():
        async with trio.open_nursery() as nursery:
            await nursery.start(serve)
            async for signum in signals:
                logging.getLogger(__name__).info("%s: shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def _run_server(serve: Callable[..., Awaitable[None]], what: str) -> int:
    _configure_logging()
    try:
        trio.run(_serve_until_signal, serve)
    except OSError as exc:
        print(f"harness: cannot serve {what}: {exc}", file=sys.stderr)
        return 1
    return 0


def _serve_chat(args: argparse.Namespace) -> int:
    _check_port(args.port, allow_zero=True)
    _check_retransmits(args)
    if args.relay_window is not None and args.relay_window < 1:
        raise UsageError(f"--relay-window must be 1 or more, not {args.relay_window}")
    if args.server_host is not None:
        _check_name(args.server_host, "--server-host")
    serve = partial(
        serve_chat,
        host=args.host,
        port=args.port,
        retransmit_interval=args.retransmit_interval,
        max_retransmits=args.max_retransmits,
        server_host_name=args.server_host,
        relay_window=args.relay_window,
    )
    return _run_server(serve, f"chat on {args.host}:{args.port}")


def _chat(args: argparse.Namespace) -> int:
    server = parse_hostport(args.server)
    if server[1] == 0:
        raise UsageError(f"{args.server!r}: the server's port cannot be 0")
    _check_name(args.name)
    _check_retransmits(args)
    status: int = trio.run(
        partial(
            run_terminal_chat,
            server,
            name=args.name,
            retransmit_interval=args.retransmit_interval,
            max_retransmits=args.max_retransmits,
        )
    )
    return status


def _serve_broadcast(args: argparse.Namespace) -> int:
    _check_port(args.port, allow_zero=True)
    _check_name(args.name)
    _check_broadcast_address(args.broadcast_address)
    serve = partial(
        serve_presence,
        name=args.name,
        port=args.port,
        bind_host=args.bind_host,
        broadcast_address=args.broadcast_address,
    )
    return _run_server(serve, f"broadcast presence on {args.bind_host}:{args.port}")


def _discover(args: argparse.Namespace) -> int:
    _check_port(args.port, allow_zero=False)
    _check_name(args.name)
    _check_broadcast_address(args.broadcast_address)
    if not args.wait > 0:
        raise UsageError(f"--wait must be positive, not {args.wait:g}")
    query: dict[str, Any] = {
        "port": args.port, "broadcast_address": args.broadcast_address, "wait": args.wait, "name": args.name,
    }
    try:
        peers = trio.run(partial(discover, **query))
    except OSError as exc:
        print(f"harness: discover on {args.broadcast_address}:{args.port} failed: {exc}", file=sys.stderr)
        return 1
    if not peers:
        print(f"no peers answered within {args.wait:g} s")
    else:
        print(format_peers(peers))
    return 0


def format_peers(peers: list[DiscoveredPeer]) -> str:
    """The ``discover`` table: address, name, host and round-trip time in milliseconds."""
    rows = [("ADDRESS", "NAME", "HOST", "RTT ms")] + [
        (f"{peer.address[0]}:{peer.address[1]}", peer.name, peer.host, f"{peer.round_trip * 1000:.1f}")
        for peer in peers
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3].rjust(6)
        for row in rows
    )
