"""UDP for cases: sockets of the suite's own, and receiving with a deadline.

Every wait is bounded: :func:`receive_datagram` fails the case when nothing comes in time,
:func:`receive_within` says None. Reads always ask for :data:`MAX_DATAGRAM` bytes, so that the
suite never cuts a datagram itself (a cut one would pass for the target's fault).
"""

from __future__ import annotations

import socket
from typing import Any

import trio

from conformance.context import CaseContext
from conformance.recording import record_socket

__all__ = ["MAX_DATAGRAM", "Address", "address_of", "open_udp", "receive_datagram", "receive_within"]

Address = tuple[str, int]

# Larger than any UDP payload (65,507 bytes over IPv4): a datagram is never cut by the suite's own reads.
MAX_DATAGRAM = 65536


def address_of(sockaddr: Any) -> Address:
    """(host, port) of a socket address of either family (IPv6 ones carry two more fields)."""
    return (str(sockaddr[0]), int(sockaddr[1]))


async def receive_datagram(
    ctx: CaseContext, sock: trio.socket.SocketType, *, doing: str, seconds: float = 2.0, size: int = MAX_DATAGRAM
) -> tuple[bytes, Address]:
    """The next datagram and its source; the case fails ("timed out ... ``doing``") after ``seconds`` (scaled)."""
    with ctx.deadline(seconds, doing):
        data, source = await sock.recvfrom(size)
    return data, address_of(source)


async def receive_within(
    ctx: CaseContext, sock: trio.socket.SocketType, seconds: float
) -> tuple[bytes, Address] | None:
    """The next datagram and its source if one comes within ``seconds`` (scaled), else None."""
    with trio.move_on_after(ctx.seconds(seconds)):
        data, source = await sock.recvfrom(MAX_DATAGRAM)
        return data, address_of(source)
    return None


async def open_udp(
    host: str = "0.0.0.0",
    port: int = 0,
    *,
    share: bool = False,
    broadcast: bool = False,
    receive_buffer: int | None = None,
) -> trio.socket.SocketType:
    """A bound IPv4 UDP socket (the caller closes it). ``share`` lets other sockets bind the same port
    (and this one bind a port others hold, when they allow it too); ``broadcast`` lets it send to a
    broadcast address."""
    sock = record_socket(trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    try:
        if share:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        await sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock
