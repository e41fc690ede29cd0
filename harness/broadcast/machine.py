"""Sans-IO broadcast presence: the responder ("who is online") and the ``discover`` querier.

Responder rules (the issue's "broadcast" protocol):

- On start it broadcasts ``BR_ENTRY`` with its name in ``user`` and ``extra``
  (:meth:`PresenceResponder.announce`); on a clean shutdown ``BR_EXIT``
  (:meth:`PresenceResponder.farewell`). The Trio layer does the broadcasting.
- ``BR_ENTRY`` from someone else is answered ``ANSENTRY`` (name in ``user`` and ``extra``),
  unicast to the source address and port, at most once per (source, packet_no), and the peer
  is reported (:class:`PeerSeen`).
- It never answers its own datagrams. A responder bound to the wildcard address receives its own
  broadcasts, from (one of our addresses, our port); we recognise them by the source port being
  ours *and* the (packet_no, user, host) being one we sent. The port alone is not enough: on a
  real network every responder uses port 7788.
- ``ANSENTRY`` reports the peer (:class:`PeerSeen`), ``BR_EXIT`` its leaving (:class:`PeerGone`);
  neither is answered.
- It keeps no table of peers: nothing read one, and forged sources filled it without limit (8 KB
  each; 6000 took 48.7 MB). What it remembers is bounded: the last (source, packet_no) pairs
  answered and its own last packet numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness._kit.addresses import Address
from harness.messenger.machine import Ignored, PacketNumbers, Remembered, Send
from harness.messenger.wire import VERSION, Command, Datagram

__all__ = [
    "DEFAULT_BROADCAST_PORT",
    "DiscoveredPeer",
    "Discovery",
    "Peer",
    "PeerGone",
    "PeerSeen",
    "PresenceEvent",
    "PresenceResponder",
]

DEFAULT_BROADCAST_PORT = 7788

# (source, packet_no) pairs answered, and our own packet numbers. A querier repeats a packet_no
# within seconds, so a few thousand entries outlast any retry on a busy network.
_MAX_REMEMBERED = 4096


@dataclass(frozen=True, slots=True)
class Peer:
    """Someone on the network, as its ``BR_ENTRY`` or ``ANSENTRY`` described it."""

    address: Address
    name: str
    user: str
    host: str


@dataclass(frozen=True, slots=True)
class PeerSeen:
    peer: Peer


@dataclass(frozen=True, slots=True)
class PeerGone:
    peer: Peer


PresenceEvent = Send | PeerSeen | PeerGone | Ignored


def _peer(datagram: Datagram, source: Address) -> Peer:
    # The name travels in extra; fall back to user for senders that leave extra empty.
    name = datagram.extra.rstrip("\x00") or datagram.user
    return Peer(source, name, datagram.user, datagram.host)


class PresenceResponder:
    """The responder's decisions. ``port`` is the port our socket is bound to."""

    def __init__(
        self, *, name: str, host: str, port: int, first_packet_no: int = 1, max_remembered: int = _MAX_REMEMBERED
    ) -> None:
        Datagram(VERSION, 0, name, host, Command.BR_ENTRY, 0, name)  # validates the names up front
        self.name = name
        self.host = host
        self.port = port
        self._packet_numbers = PacketNumbers(first_packet_no)
        self._own = Remembered(max_remembered)
        self._answered = Remembered(max_remembered)

    def announce(self) -> Datagram:
        """The ``BR_ENTRY`` to broadcast on start."""
        return self._datagram(Command.BR_ENTRY)

    def farewell(self) -> Datagram:
        """The ``BR_EXIT`` to broadcast on shutdown."""
        return self._datagram(Command.BR_EXIT)

    def is_own(self, datagram: Datagram, source: Address) -> bool:
        return source[1] == self.port and (datagram.packet_no, datagram.user, datagram.host) in self._own

    def receive(self, datagram: Datagram, source: Address) -> list[PresenceEvent]:
        if self.is_own(datagram, source):
            return [Ignored(source, datagram, "our own datagram")]
        if datagram.command == Command.BR_ENTRY:
            events: list[PresenceEvent] = [PeerSeen(_peer(datagram, source))]
            key = (source, datagram.packet_no)
            if key in self._answered:
                events.append(Ignored(source, datagram, "already answered this packet_no"))
            else:
                self._answered.add(key)
                events.append(Send(source, self._datagram(Command.ANSENTRY)))
            return events
        if datagram.command == Command.ANSENTRY:
            return [PeerSeen(_peer(datagram, source))]
        if datagram.command == Command.BR_EXIT:
            return [PeerGone(_peer(datagram, source))]
        return [Ignored(source, datagram, f"command {datagram.command} means nothing to a responder")]

    def _datagram(self, command: Command) -> Datagram:
        datagram = Datagram(VERSION, next(self._packet_numbers), self.name, self.host, command, 0, self.name)
        self._own.add((datagram.packet_no, datagram.user, datagram.host))
        return datagram


@dataclass(frozen=True, slots=True)
class DiscoveredPeer:
    """A responder that answered our query, and how long its answer took (seconds)."""

    address: Address
    name: str
    user: str
    host: str
    round_trip: float


class Discovery:
    """``discover``: one broadcast ``BR_ENTRY``, then collect the ``ANSENTRY`` answers."""

    def __init__(self, *, name: str, host: str, first_packet_no: int = 1) -> None:
        Datagram(VERSION, 0, name, host, Command.BR_ENTRY, 0, name)
        self.name = name
        self.host = host
        self._packet_numbers = PacketNumbers(first_packet_no)
        self._sent_at: float | None = None
        self._found: dict[Address, DiscoveredPeer] = {}

    @property
    def peers(self) -> list[DiscoveredPeer]:
        """In the order they answered."""
        return list(self._found.values())

    def query(self, now: float) -> Datagram:
        self._sent_at = now
        return self._datagram(Command.BR_ENTRY)

    def farewell(self) -> Datagram:
        """``BR_EXIT``, so that responders forget the querier they just recorded."""
        return self._datagram(Command.BR_EXIT)

    def receive(self, datagram: Datagram, source: Address, now: float) -> DiscoveredPeer | None:
        """The peer, the first time ``source`` answers; None for anything else."""
        if self._sent_at is None or datagram.command != Command.ANSENTRY or source in self._found:
            return None
        peer = _peer(datagram, source)
        found = DiscoveredPeer(source, peer.name, peer.user, peer.host, now - self._sent_at)
        self._found[source] = found
        return found

    def _datagram(self, command: Command) -> Datagram:
        return Datagram(VERSION, next(self._packet_numbers), self.name, self.host, command, 0, self.name)
