"""Broadcast presence: the sans-IO responder and querier, and the Trio responder and ``discover``
over loopback broadcast (127.255.255.255 reaches sockets bound to the wildcard address on Linux).

Sockets in the real-socket tests share the responder's port (all with SO_REUSEADDR):

- the *bystander*, bound to (127.255.255.255, P): sees every broadcast to P and no unicast;
- the *spy*, bound to (127.0.0.1, P): a more specific match than the responder's (0.0.0.0, P), so it
  receives the unicast datagrams sent to 127.0.0.1:P, which is where a responder answering its
  own broadcast would send its ANSENTRY.

"Nothing else arrived" is checked without sleeping: the responder handles datagrams in order, so
once a *later* query's answer has arrived, anything it sent earlier is already in the receiving
socket's buffer and a non-blocking read finds it.
"""

from __future__ import annotations

import gc
import socket
import tracemalloc
from collections.abc import AsyncIterator
from functools import partial
from itertools import count
from typing import Protocol

import pytest
import trio

from harness._kit.addresses import Address
from harness.broadcast.machine import Discovery, Peer, PeerGone, PeerSeen, PresenceResponder
from harness.broadcast.server import discover, serve_presence
from harness.messenger.machine import Ignored, Send
from harness.messenger.wire import MAX_DATAGRAM_SIZE, Command, Datagram, decode, encode

BROADCAST = "127.255.255.255"
LOOPBACK = "127.0.0.1"
TIMEOUT = 5

# Sans-IO -----------------------------------------------------------------------------------------

OWN_PORT = 7788
OTHER: Address = ("10.0.0.2", 7788)


def query(packet_no: int, command: int = Command.BR_ENTRY, *, user: str = "bob") -> Datagram:
    return Datagram(1, packet_no, user, "bobs-pc", command, 0, user)


def responder() -> PresenceResponder:
    return PresenceResponder(name="alice", host="alices-pc", port=OWN_PORT, first_packet_no=10)


def test_br_entry_from_another_is_answered_unicast_once_per_packet_no() -> None:
    alice = responder()
    events = alice.receive(query(1), OTHER)
    [answer] = [event for event in events if isinstance(event, Send)]
    assert answer.destination == OTHER
    assert (answer.datagram.command, answer.datagram.user, answer.datagram.extra) == (
        Command.ANSENTRY,
        "alice",
        "alice",
    )
    assert PeerSeen(Peer(OTHER, "bob", "bob", "bobs-pc")) in events
    repeat = alice.receive(query(1), OTHER)
    assert not any(isinstance(event, Send) for event in repeat)
    assert any(isinstance(event, Send) for event in alice.receive(query(2), OTHER))
    assert any(isinstance(event, Send) for event in alice.receive(query(1), ("10.0.0.3", 7788)))


def test_own_datagrams_are_never_answered() -> None:
    alice = responder()
    announcement = alice.announce()
    assert (announcement.command, announcement.user, announcement.extra) == (Command.BR_ENTRY, "alice", "alice")
    # Our broadcast comes back from one of our addresses and our port.
    [event] = alice.receive(announcement, ("192.168.1.5", OWN_PORT))
    assert isinstance(event, Ignored)
    # The same datagram from another port is someone else's and is answered.
    assert any(isinstance(e, Send) for e in alice.receive(announcement, ("192.168.1.5", OWN_PORT + 1)))


def test_same_port_elsewhere_is_not_us() -> None:
    alice = responder()
    other_responder = Datagram(1, 10, "carol", "carols-pc", Command.BR_ENTRY, 0, "carol")
    assert any(isinstance(e, Send) for e in alice.receive(other_responder, ("10.0.0.9", OWN_PORT)))


def test_ansentry_and_br_exit_are_reported_without_answers() -> None:
    alice = responder()
    assert alice.receive(query(1, Command.ANSENTRY), OTHER) == [PeerSeen(Peer(OTHER, "bob", "bob", "bobs-pc"))]
    assert alice.receive(query(2, Command.BR_EXIT), OTHER) == [PeerGone(Peer(OTHER, "bob", "bob", "bobs-pc"))]
    [ignored] = alice.receive(query(4, Command.SENDMSG), OTHER)
    assert isinstance(ignored, Ignored)


def test_forged_sources_leave_nothing_behind() -> None:
    """6000 forged BR_ENTRY of 8 KB each once added 48.7 MB to a peer table that nothing read."""
    alice = responder()
    extra = b"x" * (MAX_DATAGRAM_SIZE - 100)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(6000):
            # Decoded from bytes, as the server does: each datagram's text is its own.
            forged = decode(b"1:%d:bob:bobs-pc:1:%s" % (index, extra))
            alice.receive(forged, (f"10.0.{index // 250}.{index % 250 + 1}", 7788))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # What stays is the bounded memory of answered (source, packet_no) pairs: well under 8 MB.
    assert held < 8_000_000, f"{held} bytes held after 6000 forged sources"


def test_farewell_is_br_exit_with_the_name() -> None:
    farewell = responder().farewell()
    assert (farewell.command, farewell.user, farewell.extra) == (Command.BR_EXIT, "alice", "alice")


def test_discovery_collects_first_answer_per_address_with_round_trip() -> None:
    discovery = Discovery(name="q", host="pc")
    answer = Datagram(1, 5, "alice", "alices-pc", Command.ANSENTRY, 0, "Alice")
    assert discovery.receive(answer, OTHER, 0.5) is None  # no query sent yet
    sent = discovery.query(10.0)
    assert (sent.command, sent.user) == (Command.BR_ENTRY, "q")
    found = discovery.receive(answer, OTHER, 10.25)
    assert found is not None
    assert (found.address, found.name, found.round_trip) == (OTHER, "Alice", 0.25)
    assert discovery.receive(answer, OTHER, 10.5) is None
    assert discovery.receive(query(1), ("10.0.0.3", 1), 10.5) is None
    assert [peer.address for peer in discovery.peers] == [OTHER]


# Real sockets ------------------------------------------------------------------------------------


class Endpoint:
    """A UDP socket for tests, readable both with Trio and without blocking."""

    def __init__(self, host: str, port: int, *, reuse: bool = True) -> None:
        self._std = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if reuse:
            self._std.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._std.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self._std.bind((host, port))
        self.sock = trio.socket.from_stdlib_socket(self._std)
        self.port: int = self._std.getsockname()[1]
        self._numbers = count(1)

    def close(self) -> None:
        self.sock.close()

    async def send(
        self, destination: Address, command: int = Command.BR_ENTRY, *, packet_no: int | None = None, name: str = "bob"
    ) -> int:
        number = next(self._numbers) if packet_no is None else packet_no
        await self.sock.sendto(encode(Datagram(1, number, name, "pc", command, 0, name)), destination)
        return number

    async def receive(self) -> tuple[Datagram, Address]:
        data, source = await self.sock.recvfrom(MAX_DATAGRAM_SIZE + 1)
        return decode(data), source

    def pending(self) -> list[tuple[Datagram, Address]]:
        """Everything already queued on the socket, without waiting."""
        queued: list[tuple[Datagram, Address]] = []
        while True:
            try:
                data, source = self._std.recvfrom(MAX_DATAGRAM_SIZE + 1)
            except BlockingIOError:
                return queued
            queued.append((decode(data), source))


class EndpointFactory(Protocol):
    def __call__(self, host: str = ..., port: int = ...) -> Endpoint: ...


@pytest.fixture
async def endpoint() -> AsyncIterator[EndpointFactory]:
    opened: list[Endpoint] = []

    def make(host: str = LOOPBACK, port: int = 0) -> Endpoint:
        opened.append(Endpoint(host, port))
        return opened[-1]

    yield make
    for end in opened:
        end.close()


@pytest.fixture
async def bystander(endpoint: EndpointFactory) -> Endpoint:
    """Bound first, to an ephemeral port that the responder then shares: no port race."""
    return endpoint(BROADCAST, 0)


@pytest.fixture
async def responder_port(nursery: trio.Nursery, bystander: Endpoint) -> AsyncIterator[int]:
    port: int = await nursery.start(partial(serve_presence, name="alice", port=bystander.port))
    with trio.fail_after(TIMEOUT):
        announcement, _ = await bystander.receive()
    assert announcement.command == Command.BR_ENTRY
    yield port


async def ask(querier: Endpoint, port: int, *, packet_no: int | None = None) -> Datagram:
    """Broadcast a query and return the answer (there must be one)."""
    await querier.send((BROADCAST, port), packet_no=packet_no)
    with trio.fail_after(1.0):  # the issue: answered within 1 s
        answer, source = await querier.receive()
    assert source == (LOOPBACK, port)
    return answer


async def test_start_announcement_and_cancellation_farewell_are_broadcast(
    endpoint: EndpointFactory, bystander: Endpoint
) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_presence, name="alice", port=bystander.port))
            assert port == bystander.port
            entry, source = await bystander.receive()
            assert source[1] == port
            assert encode(entry) == f"1:{entry.packet_no}:alice:{entry.host}:1:alice".encode()
            nursery.cancel_scope.cancel()
        farewell, source = await bystander.receive()
        assert source[1] == port
        assert (farewell.command, farewell.user, farewell.extra) == (Command.BR_EXIT, "alice", "alice")


async def test_query_is_answered_once_unicast_and_not_by_broadcast(
    endpoint: EndpointFactory, bystander: Endpoint, responder_port: int
) -> None:
    querier, marker = endpoint(), endpoint()
    answer = await ask(querier, responder_port, packet_no=7)
    assert (answer.command, answer.user, answer.extra) == (Command.ANSENTRY, "alice", "alice")
    await querier.send((BROADCAST, responder_port), packet_no=7)  # the same query again
    await ask(marker, responder_port)
    assert querier.pending() == []
    seen = [datagram.command for datagram, _ in bystander.pending()]
    assert seen == [Command.BR_ENTRY] * 3  # the queries themselves; no answer was broadcast
    # A new packet_no from the same querier is a new query.
    await ask(querier, responder_port, packet_no=8)


async def test_unicast_query_is_answered_too(endpoint: EndpointFactory, responder_port: int) -> None:
    querier = endpoint()
    await querier.send((LOOPBACK, responder_port))
    with trio.fail_after(1.0):
        answer, source = await querier.receive()
    assert (answer.command, source) == (Command.ANSENTRY, (LOOPBACK, responder_port))


async def test_two_queriers_are_each_answered(endpoint: EndpointFactory, responder_port: int) -> None:
    first, second = endpoint(), endpoint()
    await first.send((BROADCAST, responder_port))
    await second.send((BROADCAST, responder_port))
    with trio.fail_after(1.0):
        assert (await first.receive())[0].command == Command.ANSENTRY
        assert (await second.receive())[0].command == Command.ANSENTRY


async def test_ansentry_and_br_exit_get_no_reply(endpoint: EndpointFactory, responder_port: int) -> None:
    querier, marker = endpoint(), endpoint()
    await querier.send((LOOPBACK, responder_port), Command.ANSENTRY)
    await querier.send((BROADCAST, responder_port), Command.ANSENTRY)
    await querier.send((LOOPBACK, responder_port), Command.BR_EXIT)
    await querier.send((BROADCAST, responder_port), Command.BR_EXIT)
    await ask(marker, responder_port)
    assert querier.pending() == []


async def test_own_broadcasts_are_never_answered(
    endpoint: EndpointFactory, bystander: Endpoint, nursery: trio.Nursery
) -> None:
    spy = endpoint(LOOPBACK, bystander.port)
    port = await nursery.start(partial(serve_presence, name="alice", port=bystander.port))
    marker = endpoint()
    await ask(marker, port)  # after this, an answer to the start announcement would be queued
    assert spy.pending() == []


async def test_malformed_datagrams_are_ignored(endpoint: EndpointFactory, responder_port: int) -> None:
    querier = endpoint()
    for data in [b"", b"\xff\xfe", b"1:1:a:b:1", b"2:1:a:b:1:x", b"1:1::b:1:x", b"x" * 9000, "1:一:a:b:1:".encode()]:
        await querier.sock.sendto(data, (BROADCAST, responder_port))
        await querier.sock.sendto(data, (LOOPBACK, responder_port))
    answer = await ask(querier, responder_port)
    assert answer.command == Command.ANSENTRY
    assert querier.pending() == []


async def test_discover_lists_the_responder(responder_port: int) -> None:
    # One host has one responder per port: a second one on the same port would answer from the
    # same address. Several hosts need network namespaces (the conformance suite's job).
    with trio.fail_after(TIMEOUT):
        [peer] = await discover(port=responder_port, wait=0.3)
    assert (peer.name, peer.user, peer.address) == ("alice", "alice", (LOOPBACK, responder_port))
    assert 0 <= peer.round_trip < 0.3


async def test_discover_with_nobody_there_returns_nothing(bystander: Endpoint) -> None:
    with trio.fail_after(TIMEOUT):
        assert await discover(port=bystander.port, wait=0.1) == []
    # It queried by broadcast and said goodbye.
    assert [datagram.command for datagram, _ in bystander.pending()] == [Command.BR_ENTRY, Command.BR_EXIT]


async def test_invalid_broadcast_address_is_refused() -> None:
    with pytest.raises(ValueError, match="not an IPv4 address"):
        await discover(port=1, broadcast_address="everyone")
    with pytest.raises(ValueError, match="not an IPv4 address"):
        await serve_presence(name="alice", broadcast_address="::1")
