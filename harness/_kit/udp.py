"""Opening UDP sockets, one way for every protocol, server and client."""

from __future__ import annotations

import socket

import trio


async def open_raw_udp_socket(
    host: str,
    port: int = 0,
    *,
    broadcast: bool = False,
    reuse_address: bool = False,
    buffer_size: int | None = None,
    connect: bool = False,
) -> socket.socket:
    """A non-blocking standard-library UDP socket: see :func:`open_udp_socket`."""
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    family, type_, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setblocking(False)
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if buffer_size is not None:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, buffer_size)
                except OSError:  # pragma: no cover - a platform refusing is harmless
                    pass
        if connect:
            # UDP connect() does not block: it only fixes the peer (and binds an ephemeral port).
            sock.connect(sockaddr)
        else:
            sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


async def open_udp_socket(
    host: str,
    port: int = 0,
    *,
    broadcast: bool = False,
    reuse_address: bool = False,
    buffer_size: int | None = None,
    connect: bool = False,
) -> trio.socket.SocketType:
    """A UDP socket bound to ``host``:``port`` (IPv4 or IPv6 as ``host`` resolves).

    ``broadcast`` sets ``SO_BROADCAST`` (to send to a broadcast address), ``reuse_address``
    ``SO_REUSEADDR`` (to share the port with other sockets, such as a bystander bound to the
    broadcast address), ``buffer_size`` the kernel's receive and send buffers. With ``connect``
    the socket is connected to ``host``:``port`` instead of bound there: only that peer's
    datagrams are received, and an ICMP port-unreachable shows up as :class:`ConnectionRefusedError`.
    Raises :class:`OSError` when the address cannot be resolved or bound.
    """
    raw = await open_raw_udp_socket(
        host, port, broadcast=broadcast, reuse_address=reuse_address, buffer_size=buffer_size, connect=connect
    )
    return trio.socket.from_stdlib_socket(raw)
