"""Argument checks shared by the chat and broadcast commands (both put names in datagram fields)."""

from __future__ import annotations

from harness._kit.errors import UsageError

NAME_HELP = "non-empty, without ':'"


def check_name(name: str, option: str = "--name") -> None:
    if not name:
        raise UsageError(f"{option} must not be empty")
    if ":" in name:
        raise UsageError(f"{option} {name!r} must not contain ':' (it separates the datagram's fields)")
