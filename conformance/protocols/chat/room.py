"""The suite's members of a chat room: joining, and the checks on what the server relays."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Sequence

import trio

from conformance.context import CaseContext
from conformance.kit.datagrams import Address
from conformance.kit.failures import mismatch, show_text
from conformance.protocols._messenger.peers import LEAVE_SECONDS, Peer, Received, Sockets, acked
from conformance.vocabulary import CaseFailed
from harness.messenger.wire import (
    SENDCHECKOPT,
    Command,
)


async def join(peer: Peer, *, seconds: float = 2.0, retry: float | None = None, name: str | None = None) -> Received:
    """Send ``BR_ENTRY`` (``user`` = nickname) and wait for the server's ``ANSENTRY``.

    With ``retry``, the join is sent again every ``retry`` seconds until answered (a client
    behind a lossy link); otherwise once.
    """
    if name is not None:
        peer.name = name
    since = len(peer.inbox)
    doing = f"waiting for ANSENTRY after {peer} sent BR_ENTRY to {peer.server[0]}:{peer.server[1]}"
    try:
        with peer.ctx.deadline(seconds, doing):
            while True:
                await peer.send(peer.datagram(Command.BR_ENTRY))
                with trio.move_on_after(math.inf if retry is None else peer.ctx.seconds(retry)):
                    for received in peer.inbox[since:]:
                        if received.is_command(Command.ANSENTRY):
                            return received
                    while True:
                        received = await peer.receive()
                        if received.is_command(Command.ANSENTRY):
                            return received
    except CaseFailed as failure:
        failure.details = peer.summary()
        raise


class Room:
    """The suite's members of one chat room, for one case. Get one from :func:`chat_room`."""

    def __init__(self, ctx: CaseContext, sockets: Sockets, server: Address) -> None:
        self.ctx = ctx
        self.sockets = sockets
        self.server = server
        self.peers: list[Peer] = []

    async def peer(
        self, name: str, *, joined: bool = True, auto_ack: bool = True, retry: float | None = None, seconds: float = 2.0
    ) -> Peer:
        """A new member on its own socket; joined to the room unless ``joined=False``."""
        peer = Peer(self.ctx, await self.sockets.open(), self.server, name, auto_ack=auto_ack)
        self.peers.append(peer)
        if joined:
            await join(peer, retry=retry, seconds=seconds)
        return peer


@contextlib.asynccontextmanager
async def chat_room(ctx: CaseContext, *, server: Address | None = None) -> AsyncIterator[Room]:
    """Members for a chat case. They all leave (``BR_EXIT``) when the block ends, so that the server
    does not go on relaying to sockets that are gone, and their sockets are closed."""
    with Sockets() as sockets:
        room = Room(ctx, sockets, ctx.address if server is None else server)
        try:
            yield room
        finally:
            with trio.move_on_after(LEAVE_SECONDS, shield=True):
                for peer in room.peers:
                    await peer.leave()


def _relay_numbers_before(peer: Peer, since: int) -> set[int]:
    return {
        r.datagram.packet_no for r in peer.inbox[:since] if r.datagram is not None and r.is_command(Command.SENDMSG)
    }


async def expect_relay(peer: Peer, text: str, *, sender: str, since: int, seconds: float = 2.0) -> Received:
    """The first new relay ``peer`` receives after inbox index ``since`` must be ``text`` from ``sender``
    as ``1:<packet_no>:<sender>:<server host>:288:<text>``. Retransmissions of earlier relays are skipped."""
    old = _relay_numbers_before(peer, since)
    relay = await peer.wait_for(
        lambda r: r.is_command(Command.SENDMSG) and r.datagram is not None and r.datagram.packet_no not in old,
        seconds=seconds,
        doing=f"waiting for {peer} to receive the relay of {show_text(text.encode())} from {sender}",
        since=since,
    )
    assert relay.datagram is not None
    if relay.datagram.extra != text:
        expected, actual = text.encode(), relay.datagram.extra.encode()
        raise mismatch(
            f"the text relayed to {peer} differs from the {len(expected)}-byte text {sender} sent",
            expected=expected,
            actual=actual,
        )
    if relay.datagram.user != sender:
        raise CaseFailed(
            f"the relay to {peer} names {relay.datagram.user!r} as the sender, not the nickname {sender!r}",
            expected=f"1:<packet_no>:{sender}:<server host>:288:<text>",
            actual=relay.data,
        )
    if relay.datagram.command_field != Command.SENDMSG | SENDCHECKOPT:
        raise CaseFailed(
            f"the relay to {peer} has command field {relay.datagram.command_field}, not 288 (SENDMSG|SENDCHECKOPT)",
            actual=relay.data,
        )
    return relay


async def wait_relay_of(peer: Peer, text: str, *, seconds: float = 2.0, since: int = 0) -> Received:
    """Wait for a relay carrying exactly ``text``, whatever else arrives first."""
    return await peer.wait_for(
        lambda r: r.is_command(Command.SENDMSG) and r.datagram is not None and r.datagram.extra == text,
        seconds=seconds,
        doing=f"waiting for {peer} to receive the relay of {show_text(text.encode())}",
        since=since,
    )


async def wait_ack(peer: Peer, packet_no: int, *, seconds: float = 2.0, since: int = 0) -> Received:
    """Wait for ``RECVMSG`` acknowledging ``packet_no``."""
    return await peer.wait_for(
        lambda r: r.is_command(Command.RECVMSG) and r.datagram is not None and acked(r.datagram) == packet_no,
        seconds=seconds,
        doing=f"waiting for {peer} to get RECVMSG with {packet_no} in extra (the acknowledgement of its message)",
        since=since,
    )


def expect_once(peer: Peer, text: str, *, what: str, lossless: bool = True) -> None:
    """``peer`` received ``text`` exactly once.

    On a lossless path (no relay in between) every copy counts: the peer acknowledges each relay
    at once, so a correct room neither relays again nor retransmits. Counting packet numbers
    would miss a room that relays a resent message again under the same number (a room that
    numbers its datagrams ``int(time.time())``, as course examples do). Where datagrams are
    lost, retransmissions of one relay are legitimate and count once, by packet number.
    """
    copies = peer.relays_of(text)
    numbers = peer.relay_numbers(text)
    if not copies:
        raise CaseFailed(f"{peer} never received {what}", details=peer.summary())
    if len(numbers) > 1:
        raise CaseFailed(
            f"{peer} received {what} {len(numbers)} times, as relays with different packet numbers {numbers} "
            "(retransmissions keep their packet_no; these are separate relays of one message)",
            details=peer.summary(),
        )
    if lossless and len(copies) > 1:
        raise CaseFailed(
            f"{peer} received {what} {len(copies)} times, all with packet_no {numbers[0]}, though it "
            "acknowledged the first copy at once: the room relayed the message again under the same "
            "number, or retransmitted a relay that was already acknowledged",
            details=peer.summary(),
        )


def expect_distinct_numbers(peer: Peer, texts: Sequence[str], *, sender: str) -> None:
    """The relays of different messages carry different packet numbers (unique per sender).

    A member drops a datagram whose packet number it has seen from the same sender (as a
    retransmission), so a room that reuses a number makes members lose messages.
    """
    first_text: dict[int, str] = {}
    for text in texts:
        for number in peer.relay_numbers(text):
            if number in first_text and first_text[number] != text:
                raise CaseFailed(
                    f"the room relayed two different messages from {sender} to {peer} under the same "
                    f"packet_no {number} ({first_text[number]!r} and {text!r}); packet numbers must be unique "
                    "per sender, or a member takes the second for a retransmission of the first "
                    "(numbering by int(time.time()) repeats within a second)",
                    details=peer.summary(),
                )
            first_text.setdefault(number, text)
