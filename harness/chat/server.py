"""The reference chat room server: :class:`~harness.chat.machine.ChatRoom` on a Trio UDP socket.

One task: it waits for a datagram or for the room's next retransmission deadline, whichever comes
first, feeds the room, and sends what the room says. Malformed datagrams and socket errors are
logged and skipped; the server keeps serving until cancelled.
"""

from __future__ import annotations

import logging
import math

import trio

from harness._kit.addresses import Address
from harness._kit.udp import open_udp_socket
from harness.chat.machine import (
    DEFAULT_MAX_RETRANSMITS,
    DEFAULT_RETRANSMIT_INTERVAL,
    ChatRoom,
    Ignored,
    Joined,
    Left,
    RelayExpired,
    RoomEvent,
)
from harness.messenger.endpoint import first_packet_no, local_host_name, receive_datagram, send_events
from harness.messenger.wire import Datagram

__all__ = ["DEFAULT_CHAT_PORT", "serve_chat"]

logger = logging.getLogger(__name__)

DEFAULT_CHAT_PORT = 8081


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
    with await open_udp_socket(host, port) as sock:
        bound_port: int = sock.getsockname()[1]
        logger.debug("chat room on %s:%d", host, bound_port)
        task_status.started(bound_port)
        while True:
            deadline = room.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                received = await receive_datagram(sock, logger)
                if received is not None:
                    await _handle(sock, room, *received)
            await _send_and_log(sock, room.poll(trio.current_time()))


async def _handle(sock: trio.socket.SocketType, room: ChatRoom, datagram: Datagram, source: Address) -> None:
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
