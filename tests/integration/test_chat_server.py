"""The chat server and the library chat client over real loopback sockets.

Negative checks ("nothing else arrived") use the server's in-order processing instead of sleeps:
a member re-sends ``BR_ENTRY`` and everything it receives before the ``ANSENTRY`` is what the
server sent it earlier. Only "retransmissions stopped" needs a quiet window of real time.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable
from functools import partial
from itertools import count
from typing import Protocol

import pytest
import trio

from harness._kit.addresses import Address
from harness.chat.client import ChatError, open_chat_client
from harness.chat.machine import Delivered, MessageReceived, Undelivered
from harness.chat.server import serve_chat
from harness.messenger.wire import MAX_DATAGRAM_SIZE, SENDCHECKOPT, Command, Datagram, decode, encode

LOOPBACK = "127.0.0.1"
TIMEOUT = 5


class RawMember:
    """A chat member played by hand over a plain UDP socket, to control every datagram."""

    def __init__(self, sock: trio.socket.SocketType, server: Address, name: str) -> None:
        self.sock = sock
        self.server = server
        self.name = name
        self._numbers = count(100)

    @property
    def address(self) -> Address:
        host, port = self.sock.getsockname()
        return (host, port)

    async def send_bytes(self, data: bytes) -> None:
        await self.sock.sendto(data, self.server)

    async def send(self, command: int, extra: str = "", *, flags: int = 0, packet_no: int | None = None) -> int:
        number = next(self._numbers) if packet_no is None else packet_no
        await self.send_bytes(encode(Datagram(1, number, self.name, "pc", command, flags, extra)))
        return number

    async def say(self, text: str, *, packet_no: int | None = None) -> int:
        return await self.send(Command.SENDMSG, text, flags=SENDCHECKOPT, packet_no=packet_no)

    async def receive(self) -> Datagram:
        while True:
            data, source = await self.sock.recvfrom(MAX_DATAGRAM_SIZE + 1)
            if source[:2] == self.server:
                return decode(data)

    async def ack(self, relay: Datagram) -> None:
        await self.send(Command.RECVMSG, str(relay.packet_no))

    async def receive_relay(self, *, ack: bool = True) -> Datagram:
        datagram = await self.receive()
        assert datagram.command == Command.SENDMSG, datagram
        if ack:
            await self.ack(datagram)
        return datagram

    async def join(self) -> list[Datagram]:
        """(Re)join; returns whatever the server had sent us before its ANSENTRY."""
        await self.send(Command.BR_ENTRY, self.name)
        earlier = []
        while (datagram := await self.receive()).command != Command.ANSENTRY:
            earlier.append(datagram)
        assert datagram.extra == self.name
        return earlier


class MemberFactory(Protocol):
    def __call__(self, name: str, *, join: bool = ..., port: int = ...) -> Awaitable[RawMember]: ...


@pytest.fixture
async def chat_port(nursery: trio.Nursery) -> int:
    port: int = await nursery.start(serve_chat)
    return port


@pytest.fixture
async def new_member(chat_port: int) -> AsyncIterator[MemberFactory]:
    """``await new_member(name, join=True, port=chat_port)``: a joined RawMember, closed afterwards."""
    sockets: list[trio.socket.SocketType] = []

    async def make(name: str, *, join: bool = True, port: int = chat_port) -> RawMember:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        sockets.append(sock)
        await sock.bind((LOOPBACK, 0))
        member = RawMember(sock, (LOOPBACK, port), name)
        if join:
            with trio.fail_after(TIMEOUT):
                assert await member.join() == []
        return member

    yield make
    for sock in sockets:
        sock.close()


async def test_join_is_answered_and_a_repeated_join_renames(new_member: MemberFactory) -> None:
    alice = await new_member("alice")
    bob = await new_member("bob")
    with trio.fail_after(TIMEOUT):
        alice.name = "alicia"
        assert await alice.join() == []
        await alice.say("renamed")
        assert (await bob.receive_relay()).user == "alicia"


@pytest.mark.parametrize(
    "text",
    ["hello", "中文: with colons :: and 表情 🎉", "好:" * 2000],
    ids=["ascii", "chinese-colons", "8000-bytes"],
)
async def test_message_reaches_every_other_member_once_acked_and_not_echoed(
    new_member: MemberFactory, text: str
) -> None:
    alice, bob, carol = [await new_member(name) for name in ("alice", "bob", "carol")]
    with trio.fail_after(TIMEOUT):
        packet_no = await alice.say(text)
        ack = await alice.receive()
        assert (ack.command, ack.extra) == (Command.RECVMSG, str(packet_no))
        relays = [await bob.receive_relay(), await carol.receive_relay()]
        for relay in relays:
            assert encode(relay).endswith(f":alice:{relay.host}:288:{text}".encode())
            assert relay.extra == text
        assert relays[0].packet_no == relays[1].packet_no
        # Nothing more for anyone: no echo to alice, no second copy to bob or carol.
        assert await alice.join() == []
        assert await bob.join() == []
        assert await carol.join() == []


def test_the_long_text_is_8000_bytes() -> None:
    assert len(("好:" * 2000).encode()) == 8000


async def test_gb2312_message_is_relayed_as_utf8(new_member: MemberFactory) -> None:
    alice, bob = await new_member("alice"), await new_member("bob")
    with trio.fail_after(TIMEOUT):
        await alice.send_bytes("1:7:alice:pc:288:你好".encode("gb2312"))
        assert (await alice.receive()).extra == "7"
        relay = await bob.receive_relay()
        assert relay.extra == "你好"


async def test_lost_ack_resend_is_acked_again_but_relayed_once(new_member: MemberFactory) -> None:
    alice, bob = await new_member("alice"), await new_member("bob")
    with trio.fail_after(TIMEOUT):
        packet_no = await alice.say("once")
        assert (await alice.receive()).extra == str(packet_no)
        await alice.say("once", packet_no=packet_no)
        assert (await alice.receive()).extra == str(packet_no)
        assert (await bob.receive_relay()).extra == "once"
        assert await bob.join() == []


async def test_withheld_relay_ack_is_retransmitted_within_a_second_until_acked(new_member: MemberFactory) -> None:
    alice, bob = await new_member("alice"), await new_member("bob")
    with trio.fail_after(TIMEOUT):
        await alice.say("please ack")
        first = await bob.receive_relay(ack=False)
        started = trio.current_time()
    with trio.fail_after(1.0):
        again = await bob.receive_relay(ack=False)
    assert again == first
    assert trio.current_time() - started >= 0.4  # the default 0.5 s interval, not a burst
    await bob.ack(again)
    with trio.move_on_after(0.8) as quiet:
        await bob.receive()
        pytest.fail("relay retransmitted after it was acknowledged")
    assert quiet.cancelled_caught


async def test_retransmissions_are_bounded(nursery: trio.Nursery, new_member: MemberFactory) -> None:
    port = await nursery.start(partial(serve_chat, retransmit_interval=0.05, max_retransmits=3))
    alice = await new_member("alice", port=port)
    bob = await new_member("bob", port=port)
    with trio.fail_after(TIMEOUT):
        await alice.say("never acked")
        copies = [await bob.receive_relay(ack=False) for _ in range(4)]
    assert len({copy.packet_no for copy in copies}) == 1
    with trio.move_on_after(0.3) as quiet:  # six intervals: the schedule is spent
        await bob.receive()
        pytest.fail("more than max_retransmits retransmissions")
    assert quiet.cancelled_caught


async def test_ten_quick_messages_arrive_in_order(new_member: MemberFactory) -> None:
    alice, bob = await new_member("alice"), await new_member("bob")
    with trio.fail_after(TIMEOUT):
        for n in range(10):
            await alice.say(f"message {n}")
        received = [(await bob.receive_relay()).extra for _ in range(10)]
    assert received == [f"message {n}" for n in range(10)]


async def test_after_leaving_a_member_receives_nothing(new_member: MemberFactory) -> None:
    alice, bob, carol = [await new_member(name) for name in ("alice", "bob", "carol")]
    with trio.fail_after(TIMEOUT):
        await bob.send(Command.BR_EXIT)
        await alice.say("bob is gone")
        assert (await carol.receive_relay()).extra == "bob is gone"
        # Rejoining shows what bob got meanwhile: the server sent nothing, not even a reply to BR_EXIT.
        assert await bob.join() == []


async def test_non_member_is_ignored(new_member: MemberFactory) -> None:
    alice = await new_member("alice")
    mallory = await new_member("mallory", join=False)
    with trio.fail_after(TIMEOUT):
        await mallory.say("let me in")
        await mallory.send(Command.RECVMSG, "1")
        await mallory.send(Command.BR_EXIT)
        assert await alice.join() == []
        assert await mallory.join() == []  # no ack came before the join's answer


def malformed_datagrams() -> list[bytes]:
    rng = random.Random(5)
    shapes = [
        b"",
        b"1",
        b"1:2:a:b:32",
        b"2:1:a:b:32:x",
        b"1:x:a:b:32:x",
        b"1:1:a:b:zz:x",
        b"1:1::b:32:x",
        b"1:1:a::32:x",
        b"1:1:a:b:32:\xff\xfe",
        b"1:" + b"9" * 5000 + b":a:b:32:x",
        b"1:1:a:b:288:" + b"x" * MAX_DATAGRAM_SIZE,  # one datagram too long
        b"1:1:a:b:33:not a number",
        b"1:1:a:b:255:unknown command",
    ]
    return shapes + [rng.randbytes(rng.randrange(0, 300)) for _ in range(200)]


async def test_malformed_datagrams_and_random_bytes_do_not_stop_the_server(new_member: MemberFactory) -> None:
    alice, bob = await new_member("alice"), await new_member("bob")
    with trio.fail_after(TIMEOUT):
        for data in malformed_datagrams():
            await alice.send_bytes(data)
        # An unknown-command or stray ack from a member is ignored too; the room still works.
        assert await alice.join() == []
        carol = await new_member("carol")
        await carol.say("still alive")
        assert (await carol.receive()).command == Command.RECVMSG
        assert (await alice.receive_relay()).extra == "still alive"
        assert (await bob.receive_relay()).extra == "still alive"


async def test_fifty_members_all_get_the_message(new_member: MemberFactory) -> None:
    members = [await new_member(f"m{n}") for n in range(50)]
    with trio.fail_after(TIMEOUT):
        await members[0].say("to everyone")
        for member in members[1:]:
            assert (await member.receive_relay()).extra == "to everyone"


# The library client ----------------------------------------------------------------------------


async def test_library_clients_exchange_messages(chat_port: int) -> None:
    server = (LOOPBACK, chat_port)
    with trio.fail_after(TIMEOUT):
        async with (
            open_chat_client(server, name="alice") as alice,
            open_chat_client(server, name="bob") as bob,
            open_chat_client(server, name="carol") as carol,
        ):
            packet_no = await alice.send("hi: 你好")
            assert await alice.receive() == Delivered(packet_no, "hi: 你好")
            for member in (bob, carol):
                message = await member.receive_message()
                assert (message.nickname, message.text) == ("alice", "hi: 你好")
            await bob.send("back")
            assert (await alice.receive_message()).text == "back"
            await carol.wait_settled()
            assert carol.unacknowledged == []


class FakeServer:
    """A server socket driven by hand, to test what the client sends."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.client: Address = ("0.0.0.0", 0)

    @property
    def address(self) -> Address:
        host, port = self.sock.getsockname()
        return (host, port)

    async def receive(self) -> tuple[Datagram, Address]:
        data, source = await self.sock.recvfrom(MAX_DATAGRAM_SIZE + 1)
        return decode(data), source

    async def send(self, datagram: Datagram, destination: Address) -> None:
        await self.sock.sendto(encode(datagram), destination)

    async def answer_join(self) -> Address:
        join, source = await self.receive()
        assert join.command == Command.BR_ENTRY
        self.client = source[:2]
        await self.send(Datagram(1, 1, "server", "srv", Command.ANSENTRY, 0, join.user), source)
        return self.client


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeServer]:
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
        await sock.bind((LOOPBACK, 0))
        yield FakeServer(sock)


async def test_client_retransmits_with_the_same_packet_no_and_reports_the_outcome(
    fake_server: FakeServer, nursery: trio.Nursery
) -> None:
    nursery.start_soon(fake_server.answer_join)
    with trio.fail_after(TIMEOUT):
        async with open_chat_client(
            fake_server.address, name="alice", retransmit_interval=0.05, max_retransmits=2
        ) as alice:
            packet_no = await alice.send("first")
            copies = [await fake_server.receive() for _ in range(2)]
            assert [copy.packet_no for copy, _ in copies] == [packet_no, packet_no]
            assert copies[0][0].command | copies[0][0].flags == Command.SENDMSG | SENDCHECKOPT
            await fake_server.send(Datagram(1, 2, "server", "srv", Command.RECVMSG, 0, str(packet_no)), copies[0][1])
            assert await alice.receive() == Delivered(packet_no, "first")

            lost = await alice.send("lost")
            assert await alice.receive() == Undelivered(lost, "lost")
        # Everything the client sent before leaving: 1 + max_retransmits copies of the lost message.
        sent = []
        while (datagram := (await fake_server.receive())[0]).command != Command.BR_EXIT:
            sent.append(datagram.packet_no)
        assert sent.count(lost) == 3


async def test_client_acks_every_relay_and_shows_duplicates_once(
    fake_server: FakeServer, nursery: trio.Nursery
) -> None:
    nursery.start_soon(fake_server.answer_join)
    with trio.fail_after(TIMEOUT):
        async with open_chat_client(fake_server.address, name="alice") as alice:
            relay = Datagram(1, 500, "bob", "srv", Command.SENDMSG, SENDCHECKOPT, "twice")
            for _ in range(2):
                await fake_server.send(relay, fake_server.client)
                ack, _ = await fake_server.receive()
                assert (ack.command, ack.extra) == (Command.RECVMSG, "500")
            following = Datagram(1, 501, "bob", "srv", Command.SENDMSG, SENDCHECKOPT, "next")
            await fake_server.send(following, fake_server.client)
            assert await alice.receive() == MessageReceived("bob", "twice", 500)
            assert await alice.receive() == MessageReceived("bob", "next", 501)


async def test_client_leaves_when_the_block_ends_even_if_cancelled(
    fake_server: FakeServer, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TIMEOUT):
        for cancelled in (False, True):
            nursery.start_soon(fake_server.answer_join)
            with trio.CancelScope() as scope:
                async with open_chat_client(fake_server.address, name="alice"):
                    if cancelled:
                        scope.cancel()
                        await trio.sleep_forever()
            exit_, _ = await fake_server.receive()
            assert (exit_.command, exit_.user) == (Command.BR_EXIT, "alice")


async def test_client_reports_an_unanswered_join(fake_server: FakeServer) -> None:
    with trio.fail_after(TIMEOUT), pytest.raises(ChatError, match="did not answer"):
        async with open_chat_client(fake_server.address, name="alice", retransmit_interval=0.05, max_retransmits=1):
            pytest.fail("joined a server that never answers")
