"""Command line: ``harness serve chat`` and ``harness chat``."""

from __future__ import annotations

import argparse
from functools import partial

import trio

from harness._kit.addresses import parse_hostport
from harness._kit.commands import SubParsers, add_server_command, serve_from_args
from harness._kit.errors import UsageError
from harness.chat.client import run_terminal_chat
from harness.chat.machine import (
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_RETRANSMITS,
    DEFAULT_MEMBER_TIMEOUT,
    DEFAULT_RETRANSMIT_INTERVAL,
)
from harness.chat.server import DEFAULT_CHAT_PORT, serve_chat
from harness.messenger.arguments import NAME_HELP, check_name

__all__ = ["register"]


def register(commands: SubParsers, serve_commands: SubParsers) -> None:
    chat_server = add_server_command(
        serve_commands,
        "chat",
        help="run the UDP chat room server",
        description="Relay messages between the members of one chat room (UDP, IP Messenger datagrams). "
        "Stops cleanly on SIGINT or SIGTERM.",
        handler=_serve_chat,
        default_port=DEFAULT_CHAT_PORT,
        transport="UDP",
        host_help="address to bind (0.0.0.0 for all interfaces)",
    )
    _add_retransmit_options(chat_server, what="an unacknowledged relay")
    chat_server.add_argument(
        "--relay-window",
        type=int,
        metavar="N",
        help="at most N unacknowledged relays per member (default: no limit, "
        "relays are pipelined; 1 gives stop-and-wait, strict order under loss)",
    )
    chat_server.add_argument(
        "--max-members",
        type=int,
        default=DEFAULT_MAX_MEMBERS,
        metavar="N",
        help=f"members at most; joins beyond are not answered (default {DEFAULT_MAX_MEMBERS})",
    )
    chat_server.add_argument(
        "--member-timeout",
        type=float,
        default=DEFAULT_MEMBER_TIMEOUT,
        metavar="S",
        help=f"forget a member silent for S seconds (default {DEFAULT_MEMBER_TIMEOUT:g})",
    )
    chat_server.add_argument(
        "--server-host", metavar="NAME", help="the host field of the server's datagrams (default: this machine's name)"
    )
    chat_server.set_defaults(handler=_serve_chat)

    chat = commands.add_parser(
        "chat",
        help="join a chat room from the terminal",
        description="Join the chat room at HOST:PORT: each line you type is sent, and messages from "
        "others are printed as 'name: text'. End of input (Ctrl-D) or Ctrl-C leaves the room.",
    )
    chat.add_argument("server", metavar="HOST:PORT", help="the chat server, e.g. 127.0.0.1:8081")
    chat.add_argument("--name", required=True, help=f"your nickname ({NAME_HELP})")
    _add_retransmit_options(chat, what="an unacknowledged message")
    chat.set_defaults(handler=_chat)


def _add_retransmit_options(parser: argparse.ArgumentParser, *, what: str) -> None:
    parser.add_argument(
        "--retransmit-interval",
        type=float,
        default=DEFAULT_RETRANSMIT_INTERVAL,
        metavar="S",
        help=f"seconds between retransmissions of {what} (default {DEFAULT_RETRANSMIT_INTERVAL})",
    )
    parser.add_argument(
        "--max-retransmits",
        type=int,
        default=DEFAULT_MAX_RETRANSMITS,
        metavar="N",
        help=f"retransmissions before giving up (default {DEFAULT_MAX_RETRANSMITS})",
    )


def _check_retransmits(args: argparse.Namespace) -> None:
    if not args.retransmit_interval > 0:
        raise UsageError(f"--retransmit-interval must be positive, not {args.retransmit_interval:g}")
    if args.max_retransmits < 0:
        raise UsageError(f"--max-retransmits must be 0 or more, not {args.max_retransmits}")


def _serve_chat(args: argparse.Namespace) -> int:
    _check_retransmits(args)
    if args.relay_window is not None and args.relay_window < 1:
        raise UsageError(f"--relay-window must be 1 or more, not {args.relay_window}")
    if args.max_members < 1:
        raise UsageError(f"--max-members must be 1 or more, not {args.max_members}")
    if not args.member_timeout > 0:
        raise UsageError(f"--member-timeout must be positive, not {args.member_timeout:g}")
    if args.server_host is not None:
        check_name(args.server_host, "--server-host")
    serve = partial(
        serve_chat,
        retransmit_interval=args.retransmit_interval,
        max_retransmits=args.max_retransmits,
        server_host_name=args.server_host,
        relay_window=args.relay_window,
        max_members=args.max_members,
        member_timeout=args.member_timeout,
    )
    window = "pipelined relays" if args.relay_window is None else f"relay window {args.relay_window}"
    retransmits = f"retransmit every {args.retransmit_interval:g} s, at most {args.max_retransmits} times"
    limits = f"at most {args.max_members} members, each forgotten after {args.member_timeout:g} s of silence"
    return serve_from_args(args, serve, what="chat", details=(window, retransmits, limits))


def _chat(args: argparse.Namespace) -> int:
    server = parse_hostport(args.server)
    if server[1] == 0:
        raise UsageError(f"{args.server!r}: the server's port cannot be 0")
    check_name(args.name)
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
