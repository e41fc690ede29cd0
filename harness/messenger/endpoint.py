"""The Trio side shared by the chat room, the chat client, the presence responder and ``discover``:
their sockets, names and packet numbers, and sending and receiving datagrams with the errors logged.
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Iterable

import trio

from harness._kit.addresses import Address, as_address
from harness.messenger.machine import Send
from harness.messenger.wire import MAX_DATAGRAM_SIZE, Datagram, DatagramError, decode, encode, field_safe

__all__ = ["RECEIVE_SIZE", "first_packet_no", "local_host_name", "receive_datagram", "send_datagram", "send_events"]

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


async def receive_datagram(sock: trio.socket.SocketType, log: logging.Logger) -> tuple[Datagram, Address] | None:
    """The next datagram and its source; None, logged at debug level, when it is malformed or the receive fails.

    A failed receive is typically an ICMP error about an earlier send (ECONNREFUSED on Windows or
    with IP_RECVERR): it concerns that old peer only.
    """
    try:
        data, sockaddr = await sock.recvfrom(RECEIVE_SIZE)
    except OSError as exc:
        log.debug("receive failed: %s", exc)
        return None
    source = as_address(sockaddr)
    try:
        return decode(data), source
    except DatagramError as exc:
        log.debug("ignored malformed datagram from %s:%d: %s", *source, exc)
        return None


async def send_datagram(
    sock: trio.socket.SocketType, datagram: Datagram, destination: Address, log: logging.Logger
) -> bool:
    """Send one datagram; log a failure (unencodable, or refused by the socket) and return False."""
    try:
        data = encode(datagram)
    except DatagramError as exc:
        log.warning("cannot send to %s:%d: %s", *destination, exc)
        return False
    try:
        await sock.sendto(data, destination)
    except OSError as exc:
        log.warning("send to %s:%d failed: %s", *destination, exc)
        return False
    return True


async def send_events(sock: trio.socket.SocketType, events: Iterable[object], log: logging.Logger) -> None:
    """Send every :class:`Send` in ``events``; log send failures and go on."""
    for event in events:
        if isinstance(event, Send):
            await send_datagram(sock, event.datagram, event.destination, log)
