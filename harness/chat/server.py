"""The reference chat room server: :class:`~harness.chat.machine.ChatRoom` on a Trio UDP socket.

One task: it waits for a datagram or for the room's next retransmission deadline, whichever comes
first, feeds the room, and sends what the room says. Malformed datagrams and socket errors are
logged and skipped; the server keeps serving until cancelled. Refused joins and forgotten members
are logged once per burst: a forger decides how many there are.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import trio

from harness._kit.addresses import as_address
from harness._kit.bursts import BurstLog
from harness._kit.udp import open_udp_socket
from harness.chat.machine import (
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_RETRANSMITS,
    DEFAULT_MEMBER_TIMEOUT,
    DEFAULT_RETRANSMIT_INTERVAL,
    ChatRoom,
    Ignored,
    Joined,
    JoinRefused,
    Left,
    MemberExpired,
    RelayDropped,
    RelayExpired,
    RoomEvent,
)
from harness.messenger.endpoint import first_packet_no, local_host_name, receive_datagram, send_events

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
    max_members: int = DEFAULT_MAX_MEMBERS,
    member_timeout: float = DEFAULT_MEMBER_TIMEOUT,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve one chat room on UDP ``(host, port)`` until cancelled; ``task_status.started(port)``.

    ``server_host_name`` is the ``host`` field of the server's datagrams (default: this machine's
    name). ``relay_window`` limits unacknowledged relays per member (None: pipelined, 1:
    stop-and-wait); ``max_members`` and ``member_timeout`` bound the room; see
    :mod:`harness.chat.machine`.
    """
    with await open_udp_socket(host, port) as sock:
        own_address = as_address(sock.getsockname())
        room = ChatRoom(
            server_host=server_host_name if server_host_name is not None else local_host_name(),
            first_packet_no=first_packet_no(),
            retransmit_interval=retransmit_interval,
            max_retransmits=max_retransmits,
            relay_window=relay_window,
            max_members=max_members,
            member_timeout=member_timeout,
            own_address=own_address,
        )
        bursts = _Bursts(
            BurstLog(logger), BurstLog(logger, level=logging.WARNING), BurstLog(logger, allowance=MEMBER_LINES)
        )
        logger.debug("chat room on %s:%d", *own_address)
        task_status.started(own_address[1])
        while True:
            deadline = room.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                received = await receive_datagram(sock, logger)
                if received is not None:
                    await _send_and_log(sock, bursts, room.receive(*received, trio.current_time()))
            await _send_and_log(sock, bursts, room.poll(trio.current_time()))


#: Joins and leaves logged per 10 s: all of a class's, not all of a forger's.
MEMBER_LINES = 30
#: A nickname is shown up to this many characters in the log.
_NAME_SHOWN = 40


class _Bursts(NamedTuple):
    notes: BurstLog
    warnings: BurstLog
    members: BurstLog


def _shown(nickname: str) -> str:
    return repr(nickname if len(nickname) <= _NAME_SHOWN else nickname[:_NAME_SHOWN] + "...")


async def _send_and_log(sock: trio.socket.SocketType, bursts: _Bursts, events: list[RoomEvent]) -> None:
    for event in events:
        if isinstance(event, Joined):
            if event.new:
                bursts.members.log(
                    "member", trio.current_time(), "%s:%d joined as %s", *event.address, _shown(event.nickname)
                )
        elif isinstance(event, Left):
            bursts.members.log("member", trio.current_time(), "%s:%d (%s) left", *event.address, _shown(event.nickname))
        elif isinstance(event, JoinRefused):
            bursts.warnings.log(
                "refused", trio.current_time(), "join from %s:%d refused: %s", *event.address, event.reason
            )
        elif isinstance(event, MemberExpired):
            bursts.notes.log(
                "expired",
                trio.current_time(),
                "%s:%d (%s) forgotten: silent too long",
                *event.address,
                _shown(event.nickname),
            )
        elif isinstance(event, RelayDropped):
            bursts.warnings.log(
                "dropped",
                trio.current_time(),
                "%s:%d has %d relays waiting; relay %d dropped",
                *event.destination,
                event.waiting,
                event.datagram.packet_no,
            )
        elif isinstance(event, RelayExpired):
            bursts.warnings.log(
                "unacknowledged",
                trio.current_time(),
                "%s:%d never acknowledged relay %d",
                *event.destination,
                event.datagram.packet_no,
            )
        elif isinstance(event, Ignored):
            logger.debug("ignored datagram from %s:%d: %s", *event.source, event.reason)
    await send_events(sock, events, logger)
