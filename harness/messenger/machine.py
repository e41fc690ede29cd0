"""Sans-IO pieces shared by the chat room and the broadcast presence machines.

Both machines take decoded datagrams with their source address and return events; the two
events they share (:class:`Send`, :class:`Ignored`) and the two pieces of state every sender
keeps (its packet numbers, and a bounded memory of what it has seen) live here.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from harness._kit.addresses import Address
from harness.messenger.wire import Datagram

__all__ = ["PACKET_NO_MODULUS", "Ignored", "PacketNumbers", "Remembered", "Send"]

# Packet numbers wrap well inside the codec's 20-digit limit, so a long-lived sender never breaks the format.
PACKET_NO_MODULUS = 2**63


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``datagram`` to ``destination``."""

    destination: Address
    datagram: Datagram


@dataclass(frozen=True, slots=True)
class Ignored:
    """A datagram the machine ignored, and why (for debug logs and tests)."""

    source: Address
    datagram: Datagram
    reason: str


class PacketNumbers:
    """A sender's packet numbers: ``next()`` gives ``first``, ``first + 1``, ... (wrapping)."""

    def __init__(self, first: int) -> None:
        if first < 0:
            raise ValueError(f"packet numbers start at 0 or more, not {first}")
        self._next = first

    def __next__(self) -> int:
        number = self._next
        self._next = (self._next + 1) % PACKET_NO_MODULUS
        return number


class Remembered:
    """A bounded set: the oldest entries are forgotten first."""

    def __init__(self, limit: int) -> None:
        self._items: collections.OrderedDict[object, None] = collections.OrderedDict()
        self._limit = limit

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def add(self, item: object) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        while len(self._items) > self._limit:
            self._items.popitem(last=False)
