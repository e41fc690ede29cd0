"""The ``harness`` command: reference servers, clients and fault tools.

Every package under :mod:`harness` with a ``cli`` module contributes its sub-commands through
``register(commands, serve_commands)``; packages whose name starts with ``_`` are shared code.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Sequence

import harness
from harness._kit.errors import UsageError
from harness._kit.version import suite_version


def command_modules() -> list[str]:
    """The ``cli`` modules of the harness packages, by package name."""
    names = []
    for info in sorted(pkgutil.iter_modules(harness.__path__), key=lambda info: info.name):
        if not info.ispkg or info.name.startswith("_"):
            continue
        name = f"{harness.__name__}.{info.name}.cli"
        if importlib.util.find_spec(name) is not None:
            names.append(name)
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Reference servers, clients and fault tools for the course socket protocols.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {suite_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run a reference server until interrupted")
    serve_commands = serve.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    for name in command_modules():
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
