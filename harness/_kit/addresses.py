"""Parsing of HOST:PORT arguments, shared by every command."""

from __future__ import annotations

from harness._kit.errors import UsageError


def parse_hostport(text: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Parse ``HOST:PORT``, ``[V6]:PORT`` or ``:PORT``; raise :class:`UsageError` with a hint otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise UsageError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:7)")
    host = host.strip("[]") or default_host
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"{text!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"{text!r}: port {port} is out of range 0-65535")
    return host, port
