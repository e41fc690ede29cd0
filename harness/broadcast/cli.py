"""Command line: ``harness serve broadcast`` and ``harness discover``."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from functools import partial
from typing import Any

import trio

from harness._kit.addresses import check_port
from harness._kit.commands import SubParsers, add_server_command, serve_from_args
from harness._kit.errors import UsageError
from harness.broadcast.machine import DEFAULT_BROADCAST_PORT, DiscoveredPeer
from harness.broadcast.server import DEFAULT_BROADCAST_ADDRESS, discover, serve_presence
from harness.messenger.arguments import NAME_HELP, check_name

__all__ = ["format_peers", "register"]


def register(commands: SubParsers, serve_commands: SubParsers) -> None:
    responder = add_server_command(
        serve_commands,
        "broadcast",
        help="run the UDP broadcast presence responder",
        description="Answer broadcast 'who is online' queries (BR_ENTRY) with a unicast ANSENTRY. "
        "Announces itself on start and broadcasts BR_EXIT on SIGINT or SIGTERM.",
        handler=_serve_broadcast,
        default_port=DEFAULT_BROADCAST_PORT,
        transport="UDP",
        default_host="0.0.0.0",
        host_option="--bind-host",
        host_help="address to bind (0.0.0.0 is needed to receive broadcasts)",
    )
    responder.add_argument("--name", required=True, help=f"the name to announce ({NAME_HELP})")
    responder.add_argument(
        "--broadcast-address",
        default=DEFAULT_BROADCAST_ADDRESS,
        metavar="A",
        help=f"where announcements go (default {DEFAULT_BROADCAST_ADDRESS}, loopback; "
        "e.g. 192.168.1.255 or 255.255.255.255 on a LAN)",
    )

    finder = commands.add_parser(
        "discover",
        help="broadcast a presence query and list who answered",
        description="Broadcast one BR_ENTRY and print the responders that answered within the wait, "
        "with their address, name and round-trip time.",
    )
    finder.add_argument(
        "--port",
        type=int,
        default=DEFAULT_BROADCAST_PORT,
        help=f"the responders' UDP port (default {DEFAULT_BROADCAST_PORT})",
    )
    finder.add_argument("--wait", type=float, default=1.0, metavar="S", help="seconds to collect answers (default 1)")
    finder.add_argument(
        "--broadcast-address",
        default=DEFAULT_BROADCAST_ADDRESS,
        metavar="A",
        help=f"where the query goes (default {DEFAULT_BROADCAST_ADDRESS})",
    )
    finder.add_argument("--name", default="discover", help=f"the querier's name ({NAME_HELP})")
    finder.set_defaults(handler=_discover)


def _check_broadcast_address(address: str) -> None:
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise UsageError(
            f"--broadcast-address {address!r} is not an IPv4 address (for example 127.255.255.255)"
        ) from None


def _serve_broadcast(args: argparse.Namespace) -> int:
    check_name(args.name)
    _check_broadcast_address(args.broadcast_address)
    serve = partial(serve_presence, name=args.name, broadcast_address=args.broadcast_address)
    details = (f"name {args.name!r}", f"announcing to {args.broadcast_address}")
    return serve_from_args(args, serve, what="broadcast", details=details, host_keyword="bind_host")


def _discover(args: argparse.Namespace) -> int:
    check_port(args.port, allow_zero=False)
    check_name(args.name)
    _check_broadcast_address(args.broadcast_address)
    if not args.wait > 0:
        raise UsageError(f"--wait must be positive, not {args.wait:g}")
    query: dict[str, Any] = {
        "port": args.port,
        "broadcast_address": args.broadcast_address,
        "wait": args.wait,
        "name": args.name,
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
