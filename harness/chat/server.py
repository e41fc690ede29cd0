"""The reference chat room server: :class:`~harness.chat.machine.ChatRoom` on a Trio UDP socket.

One task: it waits for a datagram or for the room's next retransmission deadline, whichever comes
first, feeds the room, and sends what the room says. Malformed datagrams and socket errors are
logged and skipped; the server keeps serving until cancelled.
"""

from __future__ import annotations

import logging
import math
import random
import socket
from typing import Any

import trio

from harness.chat.machine import (
    DEFAULT_MAX_RETRANSMITS,
    DEFAULT_RETRANSMIT_INTERVAL,
    Address,
    ChatRoom,
    Ignored,
    Joined,
    Left,
    MemberEvent,
    RelayExpired,
    RoomEvent,
    Send,
)
from harness.messenger.wire import MAX_DATAGRAM_SIZE, DatagramError, decode, encode, field_safe

__all__ = ["DEFAULT_CHAT_PORT", "RECEIVE_SIZE", "bind_udp", "local_host_name", "send_events", "serve_chat"]

logger = logging.getLogger(__name__)

DEFAULT_CHAT_PORT = 8081

# One byte more than the largest valid datagram, so that a longer one is seen (and rejected)
# rather than silently truncated to something that might parse.
RECEIVE_SIZE = MAX_DATAGRAM_SIZE + 1

# Random first packet number: a restarted sender on the same address should not collide with the
# (address, packet_no) pairs its previous run left in receivers' duplicate filters.
_FIRST_PACKET_NO_RANGE = 2**31


def local_host_name() -> str:
    """This machine's name, made safe for the ``host`` field."""
    return field_safe(socket.gethostname(), fallback="localhost")


def first_packet_no() -> int:
    return random.randrange(1, _FIRST_PACKET_NO_RANGE)


async def bind_udp(host: str, port: int) -> trio.socket.SocketType:
    """A UDP socket bound to ``(host, port)``, IPv4 or IPv6 as ``host`` says."""
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    family, type_, proto, _, sockaddr = infos[0]
    sock = trio.socket.socket(family, type_, proto)
    try:
        await sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def as_address(sockaddr: tuple[Any, ...]) -> Address:
    """``recvfrom`` gives 4-tuples for IPv6; the protocols identify peers by (host, port)."""
    return (sockaddr[0], sockaddr[1])


async def send_events(
    sock: trio.socket.SocketType, events: list[RoomEvent] | list[MemberEvent], log: logging.Logger
) -> None:
    """Send every :class:`Send` in ``events``; log send failures and go on."""
    for event in events:
        if not isinstance(event, Send):
            continue
        try:
            data = encode(event.datagram)
        except DatagramError as exc:
            log.warning("cannot send to %s:%d: %s", *event.destination, exc)
            continue
        try:
            await sock.sendto(data, event.destination)
        except OSError as exc:
            log.warning("send to %s:%d failed: %s", *event.destination, exc)


async def serve_chat(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    retransmit_interval: float = DEFAULT_RETRANSMIT_INTERVAL,
    max_retransmits: int = DEFAULT_MAX_RETRANSMITS,
    server_host_name: str | None = None,
    relay_window: int | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve one chat room on UDP ``(host, port)`` until cancelled; ``task_status.started(port)``.

    ``server_host_name`` is the ``host`` field of the server's datagrams (default: this machine's
    name). ``relay_window`` limits unacknowledged relays per member (None: pipelined, 1:
    stop-and-wait); see :mod:`harness.chat.machine`.
    """
    room = ChatRoom(
        server_host=server_host_name if server_host_name is not None else local_host_name(),
        first_packet_no=first_packet_no(),
        retransmit_interval=retransmit_interval,
        max_retransmits=max_retransmits,
        relay_window=relay_window,
    )
    sock = await bind_udp(host, port)
    with sock:
        bound_port: int = sock.getsockname()[1]
        logger.info("chat room on %s:%d", host, bound_port)
        task_status.started(bound_port)
        while True:
            deadline = room.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                try:
                    data, sockaddr = await sock.recvfrom(RECEIVE_SIZE)
                except OSError as exc:
                    # e.g. ECONNREFUSED from an ICMP error about an earlier send (Windows, IP_RECVERR).
                    logger.debug("receive failed: %s", exc)
                else:
                    await _handle(sock, room, data, as_address(sockaddr))
            await _send_and_log(sock, room.poll(trio.current_time()))


async def _handle(sock: trio.socket.SocketType, room: ChatRoom, data: bytes, source: Address) -> None:
    try:
        datagram = decode(data)
    except DatagramError as exc:
        logger.debug("ignored malformed datagram from %s:%d: %s", *source, exc)
        return
    await _send_and_log(sock, room.receive(datagram, source, trio.current_time()))


async def _send_and_log(sock: trio.socket.SocketType, events: list[RoomEvent]) -> None:
    for event in events:
        if isinstance(event, Joined):
            logger.info("%s:%d joined as %r", *event.address, event.nickname)
        elif isinstance(event, Left):
            logger.info("%s:%d (%r) left", *event.address, event.nickname)
        elif isinstance(event, RelayExpired):
            logger.warning("%s:%d never acknowledged relay %d", *event.destination, event.datagram.packet_no)
        elif isinstance(event, Ignored):
            logger.debug("ignored datagram from %s:%d: %s", *event.source, event.reason)
    await send_events(sock, events, logger)
