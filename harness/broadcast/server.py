"""The reference presence responder and ``discover``, on Trio UDP sockets.

The responder binds its port on all addresses with ``SO_BROADCAST`` (to send its ``BR_ENTRY``
and ``BR_EXIT`` announcements) and ``SO_REUSEADDR`` (so that other sockets, such as the
conformance suite's bystander bound to the broadcast address, can share the port). The decisions
are :class:`~harness.broadcast.machine.PresenceResponder`'s.
"""

from __future__ import annotations

import ipaddress
import logging

import trio

from harness._kit.bursts import BurstLog
from harness._kit.udp import open_udp_socket
from harness.broadcast.machine import (
    DEFAULT_BROADCAST_PORT,
    DiscoveredPeer,
    Discovery,
    PeerGone,
    PeerSeen,
    PresenceEvent,
    PresenceResponder,
)
from harness.messenger.endpoint import first_packet_no, local_host_name, receive_datagram, send_datagram
from harness.messenger.machine import Ignored, Send
from harness.messenger.wire import encode

__all__ = ["DEFAULT_BROADCAST_ADDRESS", "discover", "open_broadcast_socket", "serve_presence"]

logger = logging.getLogger(__name__)

# The loopback network's broadcast address: on Linux a socket bound to the wildcard address
# receives datagrams sent here, so tests see real broadcast semantics without a real network.
DEFAULT_BROADCAST_ADDRESS = "127.255.255.255"

# BR_EXIT on shutdown must go out even when we are being cancelled, but must not hang shutdown.
_FAREWELL_TIMEOUT = 1.0

_LIMITED_BROADCAST = "255.255.255.255"


async def open_broadcast_socket(host: str, port: int) -> trio.socket.SocketType:
    """A UDP socket bound to ``(host, port)`` that may send broadcasts and share its port."""
    return await open_udp_socket(host, port, broadcast=True, reuse_address=True)


def _check_broadcast_address(address: str) -> None:
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise ValueError(f"broadcast address {address!r} is not an IPv4 address") from None


async def serve_presence(
    *,
    name: str,
    port: int = 0,
    bind_host: str = "0.0.0.0",
    broadcast_address: str = DEFAULT_BROADCAST_ADDRESS,
    host_name: str | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer "who is online" on UDP ``port`` until cancelled; ``task_status.started(port)``.

    Broadcasts ``BR_ENTRY`` to ``(broadcast_address, port)`` before reporting the port, and
    ``BR_EXIT`` there when it stops, even when cancelled. With ``port=0`` an ephemeral port is
    bound and the announcements go to that port.
    """
    _check_broadcast_address(broadcast_address)
    sock = await open_broadcast_socket(bind_host, port)
    with sock:
        bound_port: int = sock.getsockname()[1]
        responder = PresenceResponder(
            name=name,
            host=host_name if host_name is not None else local_host_name(),
            port=bound_port,
            first_packet_no=first_packet_no(),
        )
        everyone = (broadcast_address, bound_port)
        never_answer = {broadcast_address, _LIMITED_BROADCAST}
        # Any source can claim to be a peer, so peers are logged once per burst.
        bursts = BurstLog(logger)
        await send_datagram(sock, responder.announce(), everyone, logger)
        logger.debug("%r answering on %s:%d, announced to %s:%d", name, bind_host, bound_port, *everyone)
        try:
            task_status.started(bound_port)
            while True:
                received = await receive_datagram(sock, logger)
                if received is None:
                    continue
                for event in responder.receive(*received):
                    await _act(sock, event, never_answer, bursts)
        finally:
            with trio.move_on_after(_FAREWELL_TIMEOUT, shield=True):
                await send_datagram(sock, responder.farewell(), everyone, logger)
                logger.info("%r left, BR_EXIT sent to %s:%d", name, *everyone)


async def _act(sock: trio.socket.SocketType, event: PresenceEvent, never_answer: set[str], bursts: BurstLog) -> None:
    if isinstance(event, Send):
        if event.destination[0] in never_answer:
            # Answers are unicast by definition; a "source" that is a broadcast address is forged.
            logger.warning("not answering %s:%d: a broadcast address", *event.destination)
        else:
            await send_datagram(sock, event.datagram, event.destination, logger)
    elif isinstance(event, PeerSeen):
        bursts.log("seen", trio.current_time(), "peer %r at %s:%d", event.peer.name, *event.peer.address)
    elif isinstance(event, PeerGone):
        bursts.log("gone", trio.current_time(), "peer %r at %s:%d left", event.peer.name, *event.peer.address)
    elif isinstance(event, Ignored):
        logger.debug("ignored datagram from %s:%d: %s", *event.source, event.reason)


async def discover(
    *,
    port: int = DEFAULT_BROADCAST_PORT,
    broadcast_address: str = DEFAULT_BROADCAST_ADDRESS,
    wait: float = 1.0,
    name: str = "discover",
    host_name: str | None = None,
    bind_host: str = "0.0.0.0",
) -> list[DiscoveredPeer]:
    """Broadcast one ``BR_ENTRY`` to ``(broadcast_address, port)``; return who answered within ``wait`` s.

    Afterwards it broadcasts ``BR_EXIT`` so the responders forget the querier. Raises OSError if
    the query cannot be sent (e.g. broadcasts not permitted).
    """
    _check_broadcast_address(broadcast_address)
    discovery = Discovery(
        name=name,
        host=host_name if host_name is not None else local_host_name(),
        first_packet_no=first_packet_no(),
    )
    everyone = (broadcast_address, port)
    with await open_broadcast_socket(bind_host, 0) as sock:
        await sock.sendto(encode(discovery.query(trio.current_time())), everyone)
        with trio.move_on_after(wait):
            while True:
                received = await receive_datagram(sock, logger)
                if received is not None:
                    discovery.receive(*received, trio.current_time())
        with trio.move_on_after(_FAREWELL_TIMEOUT, shield=True):
            await send_datagram(sock, discovery.farewell(), everyone, logger)
    return discovery.peers
