"""The suite's side of the chat and broadcast cases: members, queriers and bystanders on UDP sockets.

A :class:`Peer` is one UDP socket that speaks the messenger datagram format. It keeps everything it
receives in :attr:`Peer.inbox`, so a case can first make the target act and then look at what each
peer saw. Every wait has a deadline; a "nothing more arrives" check is an observation window after a
synchronisation point (for example the relay of a later message), never a bare sleep.

A chat member acknowledges every relay it receives unless told not to (``auto_ack=False``), as
the reference client does, so that the server's retransmissions stay out of the way of the cases
that are not about them.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from conformance.context import CaseContext
from conformance.kit.datagrams import MAX_DATAGRAM, Address, address_of, open_udp
from conformance.kit.failures import show_text
from conformance.kit.loopback_capture import CaptureSocket
from conformance.vocabulary import CaseFailed
from harness.messenger.wire import (
    SENDCHECKOPT,
    VERSION,
    Command,
    Datagram,
    DatagramError,
    decode,
    encode,
)

# Room for the datagrams a case leaves unread while it makes the target act.
_RECEIVE_BUFFER = 1 << 20
# The host field of every datagram the suite sends.
SUITE_HOST = "conformance"
# Packet numbers start at random so that a later case on a reused ephemeral port is not taken
# for a retransmission of an earlier one by the server's (address, packet_no) duplicate filter.
_PACKET_NO_RANGE = 2**31
# Leaving is one datagram per member; this only bounds a case that is being cancelled.
LEAVE_SECONDS = 1.0


def random_packet_numbers() -> Iterator[int]:
    return itertools.count(random.randrange(1, _PACKET_NO_RANGE))


@dataclass(frozen=True, slots=True)
class Received:
    data: bytes
    source: Address
    # None when the datagram does not decode (the suite only ever expects well-formed ones).
    datagram: Datagram | None
    at: float

    def is_command(self, command: Command) -> bool:
        return self.datagram is not None and self.datagram.command == command

    def __str__(self) -> str:
        return f"{show_text(self.data)} from {self.source[0]}:{self.source[1]}"


class DatagramSocket(Protocol):
    """What a :class:`Peer` needs of its socket: a Trio UDP socket, or a loopback capture."""

    def getsockname(self) -> Any: ...

    def recvfrom(self, size: int, /) -> Awaitable[tuple[bytes, Any]]: ...

    def sendto(self, data: bytes, address: Any, /) -> Awaitable[int]: ...

    def close(self) -> None: ...


class Sockets:
    """The UDP sockets of one case, all closed when the ``with`` block ends."""

    def __init__(self) -> None:
        self._open: list[DatagramSocket] = []

    def capture(self, address: str, port: int) -> CaptureSocket:
        """Datagrams sent to (address, port) on loopback, seen without binding the port."""
        sock = CaptureSocket(address, port)
        self._open.append(sock)
        return sock

    def __enter__(self) -> Sockets:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sock in reversed(self._open):
            sock.close()
        self._open.clear()

    async def open(
        self, host: str = "0.0.0.0", port: int = 0, *, share: bool = False, broadcast: bool = False
    ) -> trio.socket.SocketType:
        """A bound IPv4 UDP socket, closed with the others (see :func:`~conformance.kit.datagrams.open_udp`)."""
        sock = await open_udp(host, port, share=share, broadcast=broadcast, receive_buffer=_RECEIVE_BUFFER)
        self._open.append(sock)
        return sock


class Peer:
    """One UDP socket of the suite talking to ``server`` (the target, or a relay in front of it)."""

    def __init__(
        self,
        ctx: CaseContext,
        sock: DatagramSocket,
        server: Address,
        name: str,
        *,
        auto_ack: bool = True,
    ) -> None:
        self.ctx = ctx
        self.sock = sock
        self.server = server
        self.name = name
        self.auto_ack = auto_ack
        self.inbox: list[Received] = []
        self.sent: list[bytes] = []
        self._numbers = random_packet_numbers()

    @property
    def address(self) -> Address:
        host, port = self.sock.getsockname()[:2]
        return (str(host), int(port))

    def __str__(self) -> str:
        return f"{self.name} (port {self.address[1]})"

    # -- sending ---------------------------------------------------------------------------------

    def datagram(
        self,
        command: int,
        extra: str = "",
        *,
        flags: int = 0,
        packet_no: int | None = None,
        user: str | None = None,
    ) -> Datagram:
        number = next(self._numbers) if packet_no is None else packet_no
        return Datagram(VERSION, number, self.name if user is None else user, SUITE_HOST, command, flags, extra)

    async def send(self, datagram: Datagram, *, encoding: str = "utf-8", to: Address | None = None) -> bytes:
        data = encode(datagram, encoding=encoding)
        await self.send_bytes(data, to=to)
        return data

    async def send_bytes(self, data: bytes, *, to: Address | None = None) -> None:
        self.sent.append(data)
        await self.sock.sendto(data, self.server if to is None else to)

    async def say(self, text: str, *, packet_no: int | None = None, encoding: str = "utf-8") -> Datagram:
        """Send a chat message asking for an acknowledgement (``SENDMSG|SENDCHECKOPT``)."""
        datagram = self.datagram(Command.SENDMSG, text, flags=SENDCHECKOPT, packet_no=packet_no)
        await self.send(datagram, encoding=encoding)
        return datagram

    async def leave(self) -> None:
        with contextlib.suppress(OSError, trio.ClosedResourceError):
            await self.send(self.datagram(Command.BR_EXIT))

    # -- receiving -------------------------------------------------------------------------------

    async def _receive_one(self) -> Received:
        data, sockaddr = await self.sock.recvfrom(MAX_DATAGRAM)
        try:
            datagram: Datagram | None = decode(data)
        except DatagramError:
            datagram = None
        received = Received(data, address_of(sockaddr), datagram, trio.current_time())
        self.inbox.append(received)
        if self.auto_ack and datagram is not None and datagram.command == Command.SENDMSG:
            ack = self.datagram(Command.RECVMSG, str(datagram.packet_no))
            with contextlib.suppress(OSError):
                await self.sock.sendto(encode(ack), received.source)
        return received

    async def receive(self) -> Received:
        """The next datagram, however long it takes (call under a deadline)."""
        while True:
            try:
                return await self._receive_one()
            except ConnectionRefusedError:
                # An ICMP port unreachable about an earlier send (a target that already stopped).
                continue

    async def wait_for(
        self, predicate: Callable[[Received], bool], *, seconds: float, doing: str, since: int = 0
    ) -> Received:
        """The first datagram in the inbox (from index ``since``) or arriving within ``seconds``
        that satisfies ``predicate``; fail the case with "timed out ... <doing>" otherwise."""
        for received in self.inbox[since:]:
            if predicate(received):
                return received
        try:
            with self.ctx.deadline(seconds, doing):
                while True:
                    received = await self.receive()
                    if predicate(received):
                        return received
        except CaseFailed as failure:
            if failure.details is None:
                failure.details = self.summary()
            raise

    async def observe(self, seconds: float) -> None:
        """Collect whatever arrives for ``seconds`` (scaled): a deliberate observation window."""
        with trio.move_on_after(self.ctx.seconds(seconds)):
            while True:
                await self.receive()

    # -- looking at the inbox --------------------------------------------------------------------

    def commands(self, command: Command, *, since: int = 0) -> list[Received]:
        return [r for r in self.inbox[since:] if r.is_command(command)]

    def relays_of(self, text: str) -> list[Received]:
        """Every ``SENDMSG`` received carrying exactly ``text``."""
        return [r for r in self.commands(Command.SENDMSG) if r.datagram is not None and r.datagram.extra == text]

    def relay_numbers(self, text: str) -> list[int]:
        """The distinct packet numbers of the relays of ``text``, in order of first arrival:
        retransmissions share a number, a second relay of the same message has a new one."""
        numbers: list[int] = []
        for received in self.relays_of(text):
            assert received.datagram is not None
            if received.datagram.packet_no not in numbers:
                numbers.append(received.datagram.packet_no)
        return numbers

    def texts_in_order(self, texts: Iterable[str]) -> list[str]:
        """The relayed texts among ``texts``, each once, in the order they first arrived."""
        wanted = set(texts)
        seen: list[str] = []
        for received in self.commands(Command.SENDMSG):
            assert received.datagram is not None
            text = received.datagram.extra
            if text in wanted and text not in seen:
                seen.append(text)
        return seen

    def acks_of(self, packet_no: int) -> list[Received]:
        return [r for r in self.commands(Command.RECVMSG) if r.datagram is not None and acked(r.datagram) == packet_no]

    def summary(self, limit: int = 8) -> str:
        if not self.inbox:
            return f"{self} received nothing"
        lines = [f"{self} received {len(self.inbox)} datagram(s):"]
        lines += [f"  {received}" for received in self.inbox[:limit]]
        if len(self.inbox) > limit:
            lines.append(f"  ... and {len(self.inbox) - limit} more")
        return "\n".join(lines)


def acked(datagram: Datagram) -> int | None:
    """The packet number a ``RECVMSG`` acknowledges; some clients pad it with NUL or spaces."""
    text = datagram.extra.strip("\x00 \r\n")
    return int(text) if text.isascii() and text.isdigit() else None


def name_of(datagram: Datagram) -> str:
    """The name an ``ANSENTRY`` carries in ``extra``, without the NUL some programs append."""
    return datagram.extra.rstrip("\x00")


# After a synchronisation point, how long late datagrams (duplicates, stray answers) get to show up.
SETTLE_SECONDS = 0.3


async def settle(peers: Iterable[Peer], seconds: float) -> None:
    """An observation window on several peers at once."""
    async with trio.open_nursery() as nursery:
        for peer in peers:
            nursery.start_soon(peer.observe, seconds)
