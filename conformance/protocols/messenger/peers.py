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
import math
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio
from hypothesis import strategies as st

from conformance.context import CaseContext
from conformance.kit.loopback_capture import CaptureSocket
from conformance.showbytes import describe_mismatch
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

Address = tuple[str, int]

# Larger than any UDP payload: a datagram is never cut by the suite's own reads.
RECEIVE_SIZE = 65536
# The host field of every datagram the suite sends.
SUITE_HOST = "conformance"
# Packet numbers start at random so that a later case on a reused ephemeral port is not taken
# for a retransmission of an earlier one by the server's (address, packet_no) duplicate filter.
_PACKET_NO_RANGE = 2**31
# Leaving is one datagram per member; this only bounds a case that is being cancelled.
LEAVE_SECONDS = 1.0


def random_packet_numbers() -> Iterator[int]:
    return itertools.count(random.randrange(1, _PACKET_NO_RANGE))


def describe(data: bytes) -> str:
    """A short, readable rendering of a datagram for failure messages."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return repr(data[:80]) + ("..." if len(data) > 80 else "")
    return repr(text[:80]) + (f"... ({len(data)} bytes)" if len(text) > 80 else "")


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
        return f"{describe(self.data)} from {self.source[0]}:{self.source[1]}"


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
        """A bound IPv4 UDP socket; ``share`` lets other sockets bind the same port (and this one
        bind a port others hold, when they allow it too)."""
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._open.append(sock)
        if share:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        await sock.bind((host, port))
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
        data, sockaddr = await self.sock.recvfrom(RECEIVE_SIZE)
        try:
            datagram: Datagram | None = decode(data)
        except DatagramError:
            datagram = None
        received = Received(data, (str(sockaddr[0]), int(sockaddr[1])), datagram, trio.current_time())
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


# -- chat -------------------------------------------------------------------------------------------


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


async def settle(peers: Iterable[Peer], seconds: float) -> None:
    """An observation window on several peers at once."""
    async with trio.open_nursery() as nursery:
        for peer in peers:
            nursery.start_soon(peer.observe, seconds)


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
        doing=f"waiting for {peer} to receive the relay of {describe(text.encode())} from {sender}",
        since=since,
    )
    assert relay.datagram is not None
    if relay.datagram.extra != text:
        expected, actual = text.encode(), relay.datagram.extra.encode()
        raise CaseFailed(
            f"the text relayed to {peer} differs from the {len(expected)}-byte text {sender} sent",
            expected=expected,
            actual=actual,
            details=describe_mismatch(expected, actual),
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
        doing=f"waiting for {peer} to receive the relay of {describe(text.encode())}",
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


# -- malformed datagrams ---------------------------------------------------------------------------


def is_malformed(data: bytes) -> bool:
    """Whether the reference codec rejects ``data``."""
    try:
        decode(data)
    except DatagramError:
        return True
    return False


def leniently_readable(data: bytes) -> bool:
    """Whether a forgiving reader could still take ``data`` for a datagram: any decoding, any
    version field (IP Messenger variants put other strings there, Feiq ``1_lbt...``), numbers read
    with int() (signs, spaces, leading zeros), empty names. Only datagrams that not even this reader
    accepts must go unanswered; the others are only required not to break the target."""
    for encoding in ("utf-8", "gb18030"):
        fields = data.decode(encoding, "replace").split(":", 5)
        if len(fields) != 6:
            continue
        try:
            int(fields[1])
            int(fields[4])
        except ValueError:
            continue
        return True
    return False


# Values that break one field each, and tried first every run: the classic ways a reader crashes.
_BAD_FIELDS: dict[int, list[str]] = {
    0: ["", "2", "x", "1.0", "v1"],
    1: ["", "abc", "1e3", "0x10", "99999999999999999999999", "٣"],
    2: [""],
    3: [""],
    4: ["", "x", "0x20", "3.5", "99999999999999999999999", "٣"],
}
_NOT_TEXT = [b"\xff", b"\xff\xfe\xfd", b"\x80\x81", b"\xc3"]

MALFORMED_EXAMPLES: tuple[bytes, ...] = (
    b"",
    b"\xff\xfe\xfd\xfc",
    b"hello",
    b"1:2:3",
    b"1:1:alice:pc:32",
    b":::::",
    b"1:x:alice:pc:32:hi",
    b"1:1:alice:pc:x:hi",
    b"2:1:alice:pc:1:alice",
    b"1:1::pc:1:",
    b"1:1:alice::32:hi",
    b"1:99999999999999999999999:alice:pc:288:hi",
    b"1:1:alice:pc:99999999999999999999999:hi",
    b"1:1:alice:pc:288:\xff\xff\xff",
    b"1:1:alice:pc:1:" + b"x" * 9000,
)


def _field_text() -> st.SearchStrategy[str]:
    return st.text(alphabet=st.sampled_from("ab1:中 \x00é"), max_size=8)


@st.composite
def _broken_datagram(draw: st.DrawFn, commands: tuple[int, ...]) -> bytes:
    fields = [
        "1",
        str(draw(st.integers(0, 10**6))),
        draw(st.sampled_from(["alice", "张三", "m"])),
        draw(st.sampled_from(["pc", "host-1"])),
        str(draw(st.sampled_from(commands))),
        draw(_field_text()),
    ]
    style = draw(st.sampled_from(["field", "truncate", "encoding"]))
    if style == "field":
        index = draw(st.integers(0, 4))
        fields[index] = draw(st.sampled_from(_BAD_FIELDS[index]) | _field_text())
        return ":".join(fields).encode()
    if style == "truncate":
        return ":".join(fields[: draw(st.integers(0, 5))]).encode()
    text = ":".join(fields).encode()
    cut = draw(st.integers(0, len(text)))
    return text[:cut] + draw(st.sampled_from(_NOT_TEXT)) + text[cut:]


def malformed_datagrams(commands: tuple[int, ...]) -> st.SearchStrategy[bytes]:
    """Datagrams the codec rejects: one broken field, too few fields, bytes that are not text, or
    random bytes. ``commands`` are the command numbers the well-formed base datagram uses."""
    return (_broken_datagram(commands) | st.binary(max_size=120)).filter(is_malformed)
