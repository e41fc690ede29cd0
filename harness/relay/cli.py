"""``harness relay tcp`` and ``harness relay udp``: the fault-injection relays from the command line."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable
from functools import partial

from harness._kit.addresses import format_hostport, parse_hostport
from harness._kit.commands import SubParsers
from harness._kit.errors import UsageError
from harness._kit.serving import run_server
from harness.relay.rules import (
    CLASSIFIER_NAMES,
    RULES_GRAMMAR,
    SPLIT_DIRECTIONS,
    SPLIT_GRAMMAR,
    DelayRule,
    Impairments,
    LogEntry,
    RelayLog,
    RuleError,
    Selector,
    SessionEvent,
    SplitSpec,
    parse_delay_rule,
    parse_rules,
)
from harness.relay.tcp import DEFAULT_SPLIT, serve_tcp_relay
from harness.relay.udp import DEFAULT_IDLE_TIMEOUT, serve_udp_relay


def register(commands: SubParsers, serve_commands: SubParsers) -> None:
    relay = commands.add_parser(
        "relay",
        help="fault-injection relays: re-segment a TCP stream, impair UDP datagrams",
        description="Run a relay between a client and a server, injecting faults, until interrupted.",
    )
    protocols = relay.add_subparsers(dest="relay_protocol", required=True, metavar="PROTOCOL")

    tcp = protocols.add_parser(
        "tcp",
        help="re-cut a TCP byte stream into pieces of chosen sizes",
        description=(
            "Relay each client connection to the upstream server, sending the byte stream in pieces\n"
            "whose sizes SPEC chooses, each with its own send() (TCP_NODELAY). Half-close is forwarded\n"
            "both ways; a reset on one side resets the other."
        ),
        epilog=SPLIT_GRAMMAR,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_addresses(tcp)
    tcp.add_argument(
        "--split",
        default=DEFAULT_SPLIT,
        metavar="SPEC",
        help=f"where to cut the stream, see below (default {DEFAULT_SPLIT}: byte by byte)",
    )
    tcp.add_argument(
        "--direction",
        choices=SPLIT_DIRECTIONS,
        default="both",
        help="which direction to re-cut: up = client to server (default both); the other passes as received",
    )
    tcp.add_argument(
        "--gap",
        type=float,
        default=0.0,
        metavar="MS",
        help="pause MS milliseconds between the pieces of one received chunk (default 0)",
    )
    tcp.set_defaults(handler=run_tcp_relay)

    udp = protocols.add_parser(
        "udp",
        help="drop, duplicate, reorder and delay chosen UDP datagrams",
        description=(
            "Relay datagrams between clients and the upstream server, impairing the ones that RULES\n"
            "select. Each client address gets its own upstream socket; datagrams go to the address the\n"
            "server last answered from (a TFTP transfer ID), and answers go back from the listening port."
        ),
        epilog=RULES_GRAMMAR,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_addresses(udp)
    udp.add_argument("--drop", action="append", default=[], metavar="RULES", help="drop these datagrams")
    udp.add_argument("--dup", action="append", default=[], metavar="RULES", help="send these datagrams twice")
    udp.add_argument(
        "--reorder",
        action="append",
        default=[],
        metavar="RULES",
        help="hold these datagrams until the next one in the same direction has gone",
    )
    udp.add_argument("--delay", type=float, default=0.0, metavar="MS", help="delay every datagram by MS ms")
    udp.add_argument(
        "--delay-rule",
        action="append",
        default=[],
        metavar="RULES:MS",
        help="delay these datagrams by MS ms more, e.g. 'down:data#2:300'",
    )
    udp.add_argument("--loss", type=float, default=0.0, metavar="P", help="also drop each datagram with probability P")
    udp.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help="seed of the --loss pattern (default 0, reproducible)",
    )
    udp.add_argument(
        "--classify",
        choices=CLASSIFIER_NAMES,
        default="auto",
        help="how to tell datagram kinds apart (default auto: from the kinds that RULES name)",
    )
    udp.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="S",
        help=f"forget a client after S seconds without traffic (default {DEFAULT_IDLE_TIMEOUT:g})",
    )
    udp.add_argument("--log", action="store_true", help="print what happens to every datagram on stderr")
    udp.set_defaults(handler=run_udp_relay)


def _add_addresses(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        required=True,
        metavar="HOST:PORT",
        help="where clients connect (port 0: any free port, printed on start)",
    )
    parser.add_argument("--upstream", required=True, metavar="HOST:PORT", help="the server to relay to")


def _milliseconds(value: float, option: str) -> float:
    if not 0 <= value < math.inf:
        raise UsageError(f"{option} {value:g}: give a number of milliseconds >= 0")
    return value / 1000


def _rules(texts: Iterable[str], option: str) -> tuple[Selector, ...]:
    selectors: list[Selector] = []
    for text in texts:
        try:
            selectors.extend(parse_rules(text))
        except RuleError as exc:
            raise UsageError(f"{option}: {exc}") from None
    return tuple(selectors)


def _delay_rules(texts: Iterable[str]) -> tuple[DelayRule, ...]:
    rules: list[DelayRule] = []
    for text in texts:
        try:
            rules.append(parse_delay_rule(text))
        except RuleError as exc:
            raise UsageError(f"--delay-rule: {exc}") from None
    return tuple(rules)


def run_tcp_relay(args: argparse.Namespace) -> int:
    listen = parse_hostport(args.listen)
    upstream = parse_hostport(args.upstream)
    try:
        spec = SplitSpec.parse(args.split)
    except RuleError as exc:
        raise UsageError(f"--split {args.split!r}: {exc}") from None
    gap = _milliseconds(args.gap, "--gap")
    serve = partial(
        serve_tcp_relay,
        listen_host=listen[0],
        listen_port=listen[1],
        upstream=upstream,
        split=spec,
        direction=args.direction,
        gap=gap,
    )
    details = [f"to {format_hostport(*upstream)}", f"split {spec}", args.direction]
    if gap:
        details.append(f"gap {args.gap:g} ms")
    return run_server(serve, "tcp relay", *listen, details)


def _print_record(record: LogEntry | SessionEvent) -> None:
    print(record, file=sys.stderr, flush=True)


def run_udp_relay(args: argparse.Namespace) -> int:
    listen = parse_hostport(args.listen)
    upstream = parse_hostport(args.upstream)
    if not 0 <= args.loss <= 1:
        raise UsageError(f"--loss {args.loss:g}: give a probability from 0 to 1")
    if not 0 < args.idle_timeout < math.inf:
        raise UsageError(f"--idle-timeout {args.idle_timeout:g}: give a number of seconds > 0")
    try:
        rules = Impairments(
            drop=_rules(args.drop, "--drop"),
            dup=_rules(args.dup, "--dup"),
            reorder=_rules(args.reorder, "--reorder"),
            delay=_milliseconds(args.delay, "--delay"),
            delay_rules=_delay_rules(args.delay_rule),
            loss=args.loss,
            seed=args.seed,
            classify=args.classify,
        )
    except RuleError as exc:
        raise UsageError(f"{exc}; see harness relay udp --help") from None
    log = RelayLog(on_record=_print_record, keep=False) if args.log else None
    serve = partial(
        serve_udp_relay,
        listen_host=listen[0],
        listen_port=listen[1],
        upstream=upstream,
        rules=rules,
        log=log,
        idle_timeout=args.idle_timeout,
    )
    details = (f"to {format_hostport(*upstream)}", f"classifier {rules.classifier}")
    return run_server(serve, "udp relay", *listen, details)
