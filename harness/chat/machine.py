"""Sans-IO chat room (server side) and chat member (client side).

Theory of operation
-------------------
Both machines take decoded :class:`~harness.messenger.wire.Datagram` objects plus the source
address and the current time, and return events: :class:`Send` (a datagram the caller must send)
and notifications to log or show. They never read a clock; the Trio wrappers pass
``trio.current_time()`` and call :meth:`poll` at :meth:`next_deadline`.

Room (the issue's "chat" protocol):

- ``BR_ENTRY`` from any address joins it (or renames it) and is answered ``ANSENTRY`` with the
  nickname in ``extra``. ``BR_EXIT`` from a member removes it, with no reply, and drops the
  relays still owed to it.
- ``SENDMSG`` from a member is acknowledged (``RECVMSG``, its packet_no in ``extra``) when it has
  ``SENDCHECKOPT``, then relayed to every other member as
  ``1:<room packet_no>:<nickname>:<server host>:288:<text>``. One room packet_no per message,
  the same for every receiver, so receivers can discard duplicates by (server, packet_no).
- A ``SENDMSG`` whose (address, packet_no) was already relayed is acknowledged again, never
  relayed again (its sender retransmitted because our ack was lost).
- Each relay is sent at time t, retransmitted at t+I, t+2I, ... at most ``max_retransmits``
  times until the member answers ``RECVMSG`` with the relay's packet_no; if no ack has come
  one interval after the last retransmission, the relay is given up (:class:`RelayExpired`).
- Order: each member has a FIFO of relays in the order the room received the messages, and
  first transmissions follow that order. By default the relays are pipelined: the next relay is
  sent at once even if an earlier one is still unacknowledged, so a lost relay can reach the
  member after later ones (after its retransmission). Room packet numbers increase with receipt
  order, so a member can restore the order. ``relay_window=1`` gives stop-and-wait instead: at
  most one unacknowledged relay per member, strict order even under loss, at the cost of one
  round trip per message (a member that never acks then waits the full retransmission schedule
  for every message).
- Anything from a non-member except ``BR_ENTRY`` is ignored: no ack, no relay.

Limits (joins are unauthenticated, so anyone can forge them):

- At most ``max_members`` members: a ``BR_ENTRY`` from a new address beyond that is refused
  (:class:`JoinRefused`, no answer). A join from the room's own address is refused too: the room
  would relay to itself, and each relay it received would be relayed again.
- A member not heard from (any datagram) for ``member_timeout`` seconds is forgotten
  (:class:`MemberExpired`) the next time the room handles anything.
- At most ``max_queued_relays`` relays wait for one member (sent and unacknowledged, or queued
  behind the window); a message beyond that is not relayed to that member (:class:`RelayDropped`).
- The work per datagram does not grow with the member count, except the fan-out of a message:
  members are a dict in least-recently-heard order (expiry looks at the front only), and the
  retransmission deadlines are a heap of the relays in flight, not a scan of every member.

Member (the terminal client's core): joins with ``BR_ENTRY`` (retransmitted until ``ANSENTRY``),
sends each line as ``SENDMSG|SENDCHECKOPT`` and retransmits it with the same packet_no until the
server's ``RECVMSG``, acknowledges every relay and shows each relay once.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from harness._kit.addresses import Address
from harness.messenger.machine import Ignored, PacketNumbers, Remembered, Send
from harness.messenger.wire import (
    SENDCHECKOPT,
    VERSION,
    Command,
    Datagram,
    DatagramTooLong,
    encode,
)

__all__ = [
    "DEFAULT_KEEPALIVE",
    "DEFAULT_MAX_MEMBERS",
    "DEFAULT_MAX_QUEUED_RELAYS",
    "DEFAULT_MAX_RETRANSMITS",
    "DEFAULT_MEMBER_TIMEOUT",
    "DEFAULT_RETRANSMIT_INTERVAL",
    "RELAY_COMMAND",
    "ChatMember",
    "ChatRoom",
    "Delivered",
    "Ignored",
    "JoinFailed",
    "JoinRefused",
    "Joined",
    "Left",
    "MemberEvent",
    "MemberExpired",
    "MessageReceived",
    "RelayDropped",
    "RelayExpired",
    "RoomEvent",
    "Send",
    "Undelivered",
]

# The numbers: "retransmits an unacknowledged relay every 0.5 s, at most 4 times".
DEFAULT_RETRANSMIT_INTERVAL = 0.5
DEFAULT_MAX_RETRANSMITS = 4

# SENDMSG|SENDCHECKOPT = 288, the command every relay carries.
RELAY_COMMAND = Command.SENDMSG | SENDCHECKOPT

# How many (address, packet_no) pairs to remember for duplicate suppression. A retransmission
# arrives within seconds, so this only has to outlast a few retransmission schedules of a busy room.
DEFAULT_MAX_REMEMBERED = 65536

DEFAULT_SERVER_USER = "server"

# A class's room holds tens of members; each message costs one relay per member, so a few
# thousand forged members made every message a burst of thousands of datagrams.
DEFAULT_MAX_MEMBERS = 1024

# Members send nothing while they only read, so this is long; `harness chat` joins again well
# within it to stay a member.
DEFAULT_MEMBER_TIMEOUT = 600.0

# How long a member of ours stays silent before it joins again (a repeated BR_ENTRY), so that a
# room that forgets silent members keeps it: half the room's default.
DEFAULT_KEEPALIVE = DEFAULT_MEMBER_TIMEOUT / 2

# Relays waiting for one member, sent or not: a person types far fewer in one retransmission
# schedule. Without a bound, a member that acknowledges nothing under ``relay_window=1``, or a
# flood of messages to many members, made the room hold relays without end.
DEFAULT_MAX_QUEUED_RELAYS = 64

# Bind addresses that stand for every address of the host.
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


# Events ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Joined:
    """Room: ``address`` joined (``new``) or joined again. Member: the server answered our join."""

    address: Address
    nickname: str
    new: bool = True


@dataclass(frozen=True, slots=True)
class JoinRefused:
    """Room: a ``BR_ENTRY`` it did not answer (room full, or from the room's own address)."""

    address: Address
    nickname: str
    reason: str


@dataclass(frozen=True, slots=True)
class MemberExpired:
    """Room: a member was silent for longer than the member timeout and is forgotten."""

    address: Address
    nickname: str


@dataclass(frozen=True, slots=True)
class Left:
    """Room: a member left with ``BR_EXIT``."""

    address: Address
    nickname: str


@dataclass(frozen=True, slots=True)
class RelayExpired:
    """Room: a relay was never acknowledged; the retransmissions are spent."""

    destination: Address
    datagram: Datagram


@dataclass(frozen=True, slots=True)
class RelayDropped:
    """Room: a relay was not queued, because ``destination`` already has ``waiting`` relays waiting
    (a member that acknowledges nothing, or a flood of messages)."""

    destination: Address
    datagram: Datagram
    waiting: int


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """Member: a relayed message, shown once however often it is retransmitted."""

    nickname: str
    text: str
    packet_no: int


@dataclass(frozen=True, slots=True)
class Delivered:
    """Member: the server acknowledged our message."""

    packet_no: int
    text: str


@dataclass(frozen=True, slots=True)
class Undelivered:
    """Member: the server never acknowledged our message."""

    packet_no: int
    text: str


@dataclass(frozen=True, slots=True)
class JoinFailed:
    """Member: the server never answered our ``BR_ENTRY``."""

    server: Address


RoomEvent = Send | Joined | JoinRefused | Left | MemberExpired | Ignored | RelayExpired | RelayDropped
MemberEvent = Send | Joined | JoinFailed | MessageReceived | Delivered | Undelivered | Ignored


# Shared pieces ----------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)  # compared by identity: removed from queues by identity
class _Outstanding:
    """A datagram waiting for its acknowledgement, with its retransmission schedule."""

    destination: Address
    datagram: Datagram
    transmissions: int = 0
    due: float = 0.0
    # Acknowledged, given up, or its member gone: its entries in the room's timer heap are stale.
    settled: bool = False


class _Schedule:
    """When to retransmit: every ``interval``, at most ``max_retransmits`` times, then give up."""

    def __init__(self, interval: float, max_retransmits: int) -> None:
        if not interval > 0:
            raise ValueError(f"retransmit interval must be positive, not {interval!r}")
        if max_retransmits < 0:
            raise ValueError(f"max_retransmits must be >= 0, not {max_retransmits!r}")
        self.interval = interval
        self.max_retransmits = max_retransmits

    def transmit(self, item: _Outstanding, now: float) -> Send:
        item.transmissions += 1
        item.due = now + self.interval
        return Send(item.destination, item.datagram)

    def is_spent(self, item: _Outstanding) -> bool:
        return item.transmissions > self.max_retransmits


def _acked_packet_no(datagram: Datagram) -> int | None:
    """The packet_no a ``RECVMSG`` acknowledges. Tolerates the NUL or spaces some clients add."""
    text = datagram.extra.strip("\x00 \r\n")
    if text.isascii() and text.isdigit():
        return int(text)
    return None


# Room ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Member:
    nickname: str
    heard: float
    relays: collections.deque[_Outstanding]


class ChatRoom:
    """The server side of the chat protocol. See the module docstring.

    ``own_address`` is the address the room's socket is bound to; joins from it are refused (a
    wildcard host such as ``0.0.0.0`` refuses joins from any address with the room's port).
    """

    def __init__(
        self,
        *,
        server_host: str,
        server_user: str = DEFAULT_SERVER_USER,
        first_packet_no: int = 1,
        retransmit_interval: float = DEFAULT_RETRANSMIT_INTERVAL,
        max_retransmits: int = DEFAULT_MAX_RETRANSMITS,
        relay_window: int | None = None,
        max_remembered: int = DEFAULT_MAX_REMEMBERED,
        max_members: int = DEFAULT_MAX_MEMBERS,
        member_timeout: float = DEFAULT_MEMBER_TIMEOUT,
        own_address: Address | None = None,
        max_queued_relays: int = DEFAULT_MAX_QUEUED_RELAYS,
    ) -> None:
        if max_queued_relays < 1:
            raise ValueError(f"max_queued_relays must be >= 1, not {max_queued_relays}")
        if relay_window is not None and relay_window < 1:
            raise ValueError(f"relay_window must be None or >= 1, not {relay_window}")
        if max_members < 1:
            raise ValueError(f"max_members must be >= 1, not {max_members}")
        if not member_timeout > 0:
            raise ValueError(f"member_timeout must be positive, not {member_timeout!r}")
        # Validate the names once, here, rather than on the first answer.
        Datagram(VERSION, 0, server_user, server_host, Command.ANSENTRY)
        self.server_host = server_host
        self.server_user = server_user
        self.max_members = max_members
        self.member_timeout = member_timeout
        self.own_address = own_address
        self._schedule = _Schedule(retransmit_interval, max_retransmits)
        self._window = relay_window
        self.max_queued_relays = max_queued_relays
        self._packet_numbers = PacketNumbers(first_packet_no)
        # Least recently heard first: expiry only ever looks at the front.
        self._members: collections.OrderedDict[Address, _Member] = collections.OrderedDict()
        # (due, tiebreak, relay) for every transmission; stale once the relay is settled or retransmitted.
        self._timers: list[tuple[float, int, _Outstanding]] = []
        self._tiebreak = itertools.count()
        self._relayed = Remembered(max_remembered)

    @property
    def members(self) -> Mapping[Address, str]:
        """Address -> nickname, least recently heard first."""
        return {address: member.nickname for address, member in self._members.items()}

    def unacknowledged(self, address: Address) -> list[int]:
        """Room packet numbers of the relays still owed to ``address``, oldest first."""
        member = self._members.get(address)
        return [] if member is None else [relay.datagram.packet_no for relay in member.relays]

    def receive(self, datagram: Datagram, source: Address, now: float) -> list[RoomEvent]:
        events = self._expire(now)
        if datagram.command == Command.BR_ENTRY:
            events.extend(self._join(datagram, source, now))
            return events
        member = self._members.get(source)
        if member is None:
            events.append(Ignored(source, datagram, "not a member"))
            return events
        member.heard = now
        self._members.move_to_end(source)
        if datagram.command == Command.BR_EXIT:
            self._forget(source)
            events.append(Left(source, member.nickname))
        elif datagram.command == Command.SENDMSG:
            events.extend(self._message(datagram, source, member, now))
        elif datagram.command == Command.RECVMSG:
            events.extend(self._ack(datagram, source, member, now))
        else:
            events.append(Ignored(source, datagram, f"command {datagram.command} means nothing to the room"))
        return events

    def poll(self, now: float) -> list[RoomEvent]:
        """Retransmit or give up on the relays that are due at ``now``; forget silent members."""
        events = self._expire(now)
        while self._timers and self._timers[0][0] <= now:
            due, _, relay = heapq.heappop(self._timers)
            if relay.settled or relay.due != due:
                continue
            if not self._schedule.is_spent(relay):
                events.append(self._transmit(relay, now))
                continue
            member = self._members[relay.destination]
            relay.settled = True
            member.relays.remove(relay)
            events.append(RelayExpired(relay.destination, relay.datagram))
            events.extend(self._start_relays(member, now))
        return events

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`poll` has a relay to retransmit or give up, or None.

        Member expiry has no deadline of its own: a silent member costs nothing until the room
        handles something, and then :meth:`receive` and :meth:`poll` forget it first.
        """
        while self._timers:
            due, _, relay = self._timers[0]
            if not relay.settled and relay.due == due:
                return due
            heapq.heappop(self._timers)
        return None

    def is_own(self, address: Address) -> bool:
        """Whether ``address`` may be the room's own socket."""
        own = self.own_address
        return own is not None and address[1] == own[1] and (own[0] in _WILDCARD_HOSTS or address[0] == own[0])

    def _join(self, datagram: Datagram, source: Address, now: float) -> list[RoomEvent]:
        member = self._members.get(source)
        if member is None:
            if self.is_own(source):
                return [JoinRefused(source, datagram.user, "the room's own address")]
            if len(self._members) >= self.max_members:
                return [JoinRefused(source, datagram.user, f"the room is full ({self.max_members} members)")]
            self._members[source] = _Member(datagram.user, now, collections.deque())
        else:
            member.nickname = datagram.user
            member.heard = now
            self._members.move_to_end(source)
        answer = Datagram(
            VERSION,
            next(self._packet_numbers),
            self.server_user,
            self.server_host,
            Command.ANSENTRY,
            0,
            datagram.user,
        )
        return [Joined(source, datagram.user, member is None), Send(source, answer)]

    def _expire(self, now: float) -> list[RoomEvent]:
        events: list[RoomEvent] = []
        silent_since = now - self.member_timeout
        while self._members:
            address, member = next(iter(self._members.items()))
            if member.heard > silent_since:
                break
            self._forget(address)
            events.append(MemberExpired(address, member.nickname))
        return events

    def _forget(self, address: Address) -> None:
        for relay in self._members.pop(address).relays:
            relay.settled = True

    def _message(self, datagram: Datagram, source: Address, member: _Member, now: float) -> list[RoomEvent]:
        events: list[RoomEvent] = []
        key = (source, datagram.packet_no)
        if key in self._relayed:
            if datagram.wants_ack:
                events.append(self._ack_for(datagram, source))
            events.append(Ignored(source, datagram, "duplicate, already relayed"))
            return events
        relay = Datagram(
            VERSION,
            next(self._packet_numbers),
            member.nickname,
            self.server_host,
            Command.SENDMSG,
            SENDCHECKOPT,
            datagram.extra,
        )
        try:
            encode(relay)
        except DatagramTooLong as exc:
            # Not acknowledged either: the sender must learn that nobody got it.
            return [Ignored(source, datagram, f"relay would be {exc.size} bytes, too long to relay")]
        self._relayed.add(key)
        if datagram.wants_ack:
            events.append(self._ack_for(datagram, source))
        for address, other in self._members.items():
            if address != source:
                if len(other.relays) >= self.max_queued_relays:
                    events.append(RelayDropped(address, relay, len(other.relays)))
                    continue
                item = _Outstanding(address, relay)
                other.relays.append(item)
                # Everything ahead of it in the window is in flight already, so only it can start.
                if self._window is None or len(other.relays) <= self._window:
                    events.append(self._transmit(item, now))
        return events

    def _ack(self, datagram: Datagram, source: Address, member: _Member, now: float) -> list[RoomEvent]:
        packet_no = _acked_packet_no(datagram)
        for relay in self._in_flight(member):
            if relay.transmissions and relay.datagram.packet_no == packet_no:
                relay.settled = True
                member.relays.remove(relay)
                return self._start_relays(member, now)
        return [Ignored(source, datagram, "acknowledges nothing outstanding")]

    def _ack_for(self, datagram: Datagram, source: Address) -> Send:
        ack = Datagram(
            VERSION,
            next(self._packet_numbers),
            self.server_user,
            self.server_host,
            Command.RECVMSG,
            0,
            str(datagram.packet_no),
        )
        return Send(source, ack)

    def _in_flight(self, member: _Member) -> Iterator[_Outstanding]:
        if self._window is None:
            return iter(member.relays)
        return itertools.islice(member.relays, self._window)

    def _start_relays(self, member: _Member, now: float) -> list[RoomEvent]:
        """First transmissions of the relays that now fit the window, in receipt order."""
        return [self._transmit(relay, now) for relay in list(self._in_flight(member)) if not relay.transmissions]

    def _transmit(self, relay: _Outstanding, now: float) -> Send:
        send = self._schedule.transmit(relay, now)
        heapq.heappush(self._timers, (relay.due, next(self._tiebreak), relay))
        return send


# Member ---------------------------------------------------------------------------------------------


class ChatMember:
    """The client side of the chat protocol: one member talking to one server address."""

    def __init__(
        self,
        *,
        server: Address,
        name: str,
        host: str,
        first_packet_no: int = 1,
        retransmit_interval: float = DEFAULT_RETRANSMIT_INTERVAL,
        max_retransmits: int = DEFAULT_MAX_RETRANSMITS,
        max_remembered: int = 4096,
        keepalive: float | None = None,
    ) -> None:
        """With ``keepalive``, a joined member silent that long joins again (see :data:`DEFAULT_KEEPALIVE`)."""
        Datagram(VERSION, 0, name, host, Command.BR_ENTRY)  # validates the names up front
        if keepalive is not None and not keepalive > 0:
            raise ValueError(f"keepalive must be positive, not {keepalive!r}")
        self.server = server
        self.name = name
        self.host = host
        self.joined = False
        self._schedule = _Schedule(retransmit_interval, max_retransmits)
        self._packet_numbers = PacketNumbers(first_packet_no)
        self._join: _Outstanding | None = None
        self._messages: dict[int, _Outstanding] = {}
        self._shown = Remembered(max_remembered)
        self._keepalive = keepalive
        self._last_sent = -math.inf

    def join(self, now: float) -> list[MemberEvent]:
        """Send ``BR_ENTRY``; it is retransmitted until the server answers ``ANSENTRY``."""
        self._join = _Outstanding(self.server, self._datagram(Command.BR_ENTRY, 0, self.name))
        return [self._transmit(self._join, now)]

    def leave(self) -> list[MemberEvent]:
        """Send ``BR_EXIT`` once and forget everything outstanding."""
        self.joined = False
        self._join = None
        self._messages.clear()
        return [Send(self.server, self._datagram(Command.BR_EXIT, 0, self.name))]

    def say(self, text: str, now: float) -> tuple[int, list[MemberEvent]]:
        """Send ``text``; returns its packet_no. Raises DatagramTooLong if it cannot fit."""
        datagram = self._datagram(Command.SENDMSG, SENDCHECKOPT, text)
        encode(datagram)
        item = _Outstanding(self.server, datagram)
        self._messages[datagram.packet_no] = item
        return datagram.packet_no, [self._transmit(item, now)]

    @property
    def unacknowledged(self) -> list[int]:
        return list(self._messages)

    def receive(self, datagram: Datagram, source: Address, now: float) -> list[MemberEvent]:
        if source != self.server:
            return [Ignored(source, datagram, "not from the server")]
        if datagram.command == Command.ANSENTRY:
            if self._join is None:
                return [Ignored(source, datagram, "no join outstanding")]
            self._join = None
            self.joined = True
            return [Joined(self.server, datagram.extra)]
        if datagram.command == Command.SENDMSG:
            events: list[MemberEvent] = []
            if datagram.wants_ack:
                ack = self._datagram(Command.RECVMSG, 0, str(datagram.packet_no))
                events.append(Send(source, ack))
                self._last_sent = now
            if datagram.packet_no in self._shown:
                events.append(Ignored(source, datagram, "duplicate relay"))
            else:
                self._shown.add(datagram.packet_no)
                events.append(MessageReceived(datagram.user, datagram.extra, datagram.packet_no))
            return events
        if datagram.command == Command.RECVMSG:
            packet_no = _acked_packet_no(datagram)
            item = None if packet_no is None else self._messages.pop(packet_no, None)
            if packet_no is None or item is None:
                return [Ignored(source, datagram, "acknowledges nothing outstanding")]
            return [Delivered(packet_no, item.datagram.extra)]
        return [Ignored(source, datagram, f"command {datagram.command} means nothing to a member")]

    def poll(self, now: float) -> list[MemberEvent]:
        events: list[MemberEvent] = []
        if self._join is not None and self._join.due <= now:
            if self._schedule.is_spent(self._join):
                self._join = None
                events.append(JoinFailed(self.server))
            else:
                events.append(self._transmit(self._join, now))
        for packet_no, item in list(self._messages.items()):
            if item.due <= now:
                if self._schedule.is_spent(item):
                    del self._messages[packet_no]
                    events.append(Undelivered(packet_no, item.datagram.extra))
                else:
                    events.append(self._transmit(item, now))
        keepalive = self._keepalive_due()
        if keepalive is not None and keepalive <= now:
            events += self.join(now)
        return events

    def next_deadline(self) -> float | None:
        dues = [item.due for item in self._messages.values()]
        if self._join is not None:
            dues.append(self._join.due)
        keepalive = self._keepalive_due()
        if keepalive is not None:
            dues.append(keepalive)
        return min(dues, default=None)

    def _keepalive_due(self) -> float | None:
        if self._keepalive is None or not self.joined or self._join is not None:
            return None
        return self._last_sent + self._keepalive

    def _transmit(self, item: _Outstanding, now: float) -> Send:
        self._last_sent = now
        return self._schedule.transmit(item, now)

    def _datagram(self, command: Command, flags: int, extra: str) -> Datagram:
        return Datagram(VERSION, next(self._packet_numbers), self.name, self.host, command, flags, extra)
