"""The ``harness`` command: reference servers, clients and fault tools.

Each protocol package contributes its sub-commands through a ``commands`` module with a
``register(commands, serve_commands)`` function, so that this file stays a table.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from harness.errors import UsageError

COMMAND_MODULES: tuple[str, ...] = (
    "harness.echo.commands",
    "harness.relay.commands",
    "harness.tftp.commands",
    "harness.messenger.commands",
    "harness.upload.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Reference servers, clients and fault tools for the course socket protocols.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run a reference server until interrupted")
    serve_commands = serve.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands, serve_commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
    except UsageError as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result
