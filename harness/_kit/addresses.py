"""Addresses: the one ``Address`` type, and HOST:PORT parsing and formatting shared by every command."""

from __future__ import annotations

from typing import Any, TypeAlias

from harness._kit.errors import UsageError

#: A peer as the protocols name it: (host, port). Sockets hand over longer IPv6 tuples (flow
#: info, scope id): :func:`as_address` cuts them to these two where a peer is a name (chat,
#: broadcast); TFTP keeps the socket's tuple whole, so that a transfer ID compares equal.
Address: TypeAlias = tuple[str, int]


def as_address(sockaddr: tuple[Any, ...]) -> Address:
    """``recvfrom`` and ``getsockname`` give 4-tuples for IPv6; the protocols name peers by (host, port)."""
    return (str(sockaddr[0]), int(sockaddr[1]))


def format_hostport(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 host in brackets (``[::1]:7007``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_hostport(text: str, *, default_host: str = "127.0.0.1") -> Address:
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


def check_port(port: int, *, allow_zero: bool = True, option: str = "--port") -> None:
    """:class:`UsageError` unless ``port`` is 0-65535 (1-65535 without ``allow_zero``)."""
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise UsageError(f"{option} {port} is out of range {low}-65535")
