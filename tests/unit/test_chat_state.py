"""The sans-IO chat room and chat member, driven with explicit times (no clock, no sockets)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.chat.machine import (
    RELAY_COMMAND,
    Address,
    ChatMember,
    ChatRoom,
    Delivered,
    Ignored,
    Joined,
    JoinFailed,
    JoinRefused,
    Left,
    MemberEvent,
    MemberExpired,
    MessageReceived,
    RelayDropped,
    RelayExpired,
    RoomEvent,
    Send,
    Undelivered,
)
from harness.messenger.wire import MAX_DATAGRAM_SIZE, SENDCHECKOPT, Command, Datagram, encode

SERVER: Address = ("127.0.0.1", 8081)
A: Address = ("127.0.0.1", 1001)
B: Address = ("127.0.0.1", 1002)
C: Address = ("127.0.0.2", 1001)  # same port as A, other address: a different member


def datagram(packet_no: int, command: int, extra: str = "", *, user: str = "u", flags: int = 0) -> Datagram:
    return Datagram(1, packet_no, user, "pc", command, flags, extra)


def sends(events: list[RoomEvent] | list[MemberEvent]) -> list[Send]:
    return [event for event in events if isinstance(event, Send)]


def sends_to(events: list[RoomEvent], address: Address) -> list[Datagram]:
    return [event.datagram for event in sends(events) if event.destination == address]


def room_with(*members: tuple[Address, str], **options: object) -> ChatRoom:
    room = ChatRoom(server_host="srv", first_packet_no=1000, **options)  # type: ignore[arg-type]
    for address, nickname in members:
        room.receive(datagram(1, Command.BR_ENTRY, nickname, user=nickname), address, 0.0)
    return room


def say(room: ChatRoom, source: Address, packet_no: int, text: str, now: float = 0.0) -> list[RoomEvent]:
    message = datagram(packet_no, Command.SENDMSG, text, flags=SENDCHECKOPT)
    return room.receive(message, source, now)


def ack(room: ChatRoom, source: Address, relay: Datagram, now: float) -> list[RoomEvent]:
    return room.receive(datagram(77, Command.RECVMSG, str(relay.packet_no)), source, now)


# Joining and leaving ------------------------------------------------------------------------------


def test_join_is_answered_with_the_nickname() -> None:
    room = room_with()
    events = room.receive(datagram(5, Command.BR_ENTRY, "ignored", user="alice"), A, 0.0)
    assert Joined(A, "alice") in events
    [answer] = sends_to(events, A)
    assert (answer.command, answer.extra, answer.host) == (Command.ANSENTRY, "alice", "srv")
    assert room.members == {A: "alice"}


def test_repeated_join_renames_and_is_answered_again() -> None:
    room = room_with((A, "alice"))
    events = room.receive(datagram(6, Command.BR_ENTRY, user="alicia"), A, 1.0)
    assert [d.extra for d in sends_to(events, A)] == ["alicia"]
    assert room.members == {A: "alicia"}
    relay = sends_to(say(room, A, 7, "hi"), B)
    assert relay == []  # B is not a member yet
    room.receive(datagram(1, Command.BR_ENTRY, user="bob"), B, 1.0)
    [relay_to_b] = sends_to(say(room, A, 8, "hi"), B)
    assert relay_to_b.user == "alicia"


def test_leave_removes_without_reply_and_drops_pending_relays() -> None:
    room = room_with((A, "alice"), (B, "bob"))
    say(room, A, 1, "before")
    assert len(room.unacknowledged(B)) == 1
    events = room.receive(datagram(9, Command.BR_EXIT, user="bob"), B, 0.1)
    assert events == [Left(B, "bob")]
    assert room.members == {A: "alice"}
    assert room.poll(10.0) == []
    assert room.next_deadline() is None
    assert sends_to(say(room, A, 2, "after"), B) == []


def test_non_member_is_ignored() -> None:
    room = room_with((A, "alice"))
    for command in (Command.SENDMSG, Command.RECVMSG, Command.BR_EXIT, Command.ANSENTRY):
        events = room.receive(datagram(3, command, "x", flags=SENDCHECKOPT), B, 0.0)
        assert sends(events) == []
        assert isinstance(events[0], Ignored)
    assert room.members == {A: "alice"}


# Messages ----------------------------------------------------------------------------------------


def test_message_is_acknowledged_and_relayed_to_every_other_member() -> None:
    room = room_with((A, "alice"), (B, "bob"), (C, "carol"))
    events = say(room, A, 42, "hello: 你好")
    [ack_to_a] = sends_to(events, A)
    assert (ack_to_a.command, ack_to_a.flags, ack_to_a.extra) == (Command.RECVMSG, 0, "42")
    [to_b] = sends_to(events, B)
    [to_c] = sends_to(events, C)
    assert to_b == to_c  # one room packet_no per message
    assert encode(to_b) == f"1:{to_b.packet_no}:alice:srv:288:hello: 你好".encode()
    assert to_b.command | to_b.flags == RELAY_COMMAND


def test_message_without_checkopt_is_relayed_but_not_acknowledged() -> None:
    room = room_with((A, "alice"), (B, "bob"))
    events = room.receive(datagram(4, Command.SENDMSG, "quiet"), A, 0.0)
    assert sends_to(events, A) == []
    assert [d.extra for d in sends_to(events, B)] == ["quiet"]


def test_duplicate_is_acknowledged_again_but_not_relayed() -> None:
    room = room_with((A, "alice"), (B, "bob"))
    say(room, A, 42, "once")
    events = say(room, A, 42, "once", now=0.2)
    assert [d.extra for d in sends_to(events, A)] == ["42"]
    assert sends_to(events, B) == []
    # The same packet_no from another sender is a different message.
    events = say(room, B, 42, "mine")
    assert [d.extra for d in sends_to(events, B)] == ["42"]
    assert [d.extra for d in sends_to(events, A)] == ["mine"]


def test_relay_that_would_exceed_the_size_limit_is_refused_unacknowledged() -> None:
    room = ChatRoom(server_host="h" * 200, first_packet_no=1)
    room.receive(datagram(1, Command.BR_ENTRY, user="alice"), A, 0.0)
    room.receive(datagram(1, Command.BR_ENTRY, user="bob"), B, 0.0)
    text = "x" * (MAX_DATAGRAM_SIZE - len("1:1:u:pc:288:"))
    events = say(room, A, 1, text)
    assert sends(events) == []
    assert isinstance(events[0], Ignored)


# Retransmission ----------------------------------------------------------------------------------


def test_relay_is_retransmitted_every_interval_at_most_max_times_then_given_up() -> None:
    room = room_with((A, "alice"), (B, "bob"), retransmit_interval=0.5, max_retransmits=4)
    [relay] = sends_to(say(room, A, 1, "hi", now=10.0), B)
    assert room.next_deadline() == 10.5
    assert room.poll(10.49) == []
    times = []
    now = 10.0
    while (deadline := room.next_deadline()) is not None:
        now = deadline
        events = room.poll(now)
        if sends_to(events, B):
            assert sends_to(events, B) == [relay]  # the same datagram, same room packet_no
            times.append(now)
        else:
            assert events == [RelayExpired(B, relay)]
    assert times == [10.5, 11.0, 11.5, 12.0]
    assert now == 12.5
    assert room.unacknowledged(B) == []


def test_ack_stops_retransmission() -> None:
    room = room_with((A, "alice"), (B, "bob"))
    [relay] = sends_to(say(room, A, 1, "hi"), B)
    assert sends_to(room.poll(0.5), B) == [relay]
    assert ack(room, B, relay, 0.6) == []
    assert room.next_deadline() is None
    assert room.poll(5.0) == []


def test_ack_from_the_wrong_member_or_for_the_wrong_packet_is_ignored() -> None:
    room = room_with((A, "alice"), (B, "bob"), (C, "carol"))
    [relay] = sends_to(say(room, A, 1, "hi"), B)
    ack(room, B, datagram(relay.packet_no + 5, Command.SENDMSG), 0.1)
    room.receive(datagram(3, Command.RECVMSG, "not a number"), B, 0.1)
    assert room.unacknowledged(B) == [relay.packet_no]
    ack(room, C, relay, 0.1)  # C acks its own copy only
    assert room.unacknowledged(B) == [relay.packet_no]
    assert room.unacknowledged(C) == []


def test_ack_tolerates_trailing_nul() -> None:
    room = room_with((A, "alice"), (B, "bob"))
    [relay] = sends_to(say(room, A, 1, "hi"), B)
    room.receive(datagram(3, Command.RECVMSG, f"{relay.packet_no}\x00"), B, 0.1)
    assert room.unacknowledged(B) == []


def test_zero_retransmits_gives_up_after_one_interval() -> None:
    room = room_with((A, "alice"), (B, "bob"), retransmit_interval=0.25, max_retransmits=0)
    [relay] = sends_to(say(room, A, 1, "hi"), B)
    assert room.poll(0.25) == [RelayExpired(B, relay)]


# Order --------------------------------------------------------------------------------------------


def test_pipelined_relays_go_out_at_once_in_receipt_order() -> None:
    room = room_with((A, "alice"), (B, "bob"), (C, "carol"))
    first = [sends_to(say(room, A, n, f"m{n}", now=n / 100), B) for n in range(5)]
    assert [relays[0].extra for relays in first] == ["m0", "m1", "m2", "m3", "m4"]
    numbers = [relays[0].packet_no for relays in first]
    assert numbers == sorted(numbers)
    # A lost relay is retransmitted while later ones are already acknowledged.
    for relays in first[1:]:
        ack(room, B, relays[0], 0.1)
    assert [d.extra for d in sends_to(room.poll(0.5), B)] == ["m0"]


def test_window_of_one_is_stop_and_wait() -> None:
    room = room_with((A, "alice"), (B, "bob"), relay_window=1, max_retransmits=1)
    [m0] = sends_to(say(room, A, 1, "m0"), B)
    assert sends_to(say(room, A, 2, "m1"), B) == []
    assert sends_to(say(room, A, 3, "m2"), B) == []
    assert room.unacknowledged(B) == [m0.packet_no, m0.packet_no + 2, m0.packet_no + 4]
    [m1] = sends_to(ack(room, B, m0, 0.1), B)
    assert m1.extra == "m1"
    assert sends_to(room.poll(0.6), B) == [m1]  # retransmission of m1 only
    events = room.poll(1.1)  # m1 given up: m2 starts
    assert events[0] == RelayExpired(B, m1)
    assert [d.extra for d in sends_to(events, B)] == ["m2"]


def test_a_member_that_acknowledges_nothing_holds_a_bounded_queue() -> None:
    room = room_with((A, "alice"), (B, "bob"), relay_window=1, max_queued_relays=3)
    queued = [sends_to(say(room, A, n, f"m{n}"), B) for n in range(3)]
    assert len(room.unacknowledged(B)) == 3
    events = say(room, A, 3, "m3")
    dropped = [event for event in events if isinstance(event, RelayDropped)]
    assert [(event.destination, event.datagram.extra, event.waiting) for event in dropped] == [(B, "m3", 3)]
    assert len(room.unacknowledged(B)) == 3
    # The sender's message is still acknowledged: the room took it, and other members get it.
    assert [send.datagram.command for send in sends(events)] == [Command.RECVMSG]
    ack(room, B, queued[0][0], 0.1)
    assert len(room.unacknowledged(B)) == 2


@given(
    senders=st.lists(st.sampled_from([A, B, C]), max_size=30),
    acked=st.lists(st.booleans(), max_size=90),
    window=st.sampled_from([None, 1, 3]),
)
def test_each_member_gets_every_other_members_message_once_in_receipt_order(
    senders: list[Address], acked: list[bool], window: int | None
) -> None:
    room = room_with((A, "alice"), (B, "bob"), (C, "carol"), relay_window=window, max_retransmits=100)
    first_seen: dict[Address, list[str]] = {A: [], B: [], C: []}
    acks = iter(acked)
    now = 0.0

    def deliver(events: list[RoomEvent]) -> None:
        for event in sends(events):
            relay = event.datagram
            if relay.command != Command.SENDMSG:
                continue
            if relay.extra not in first_seen[event.destination]:
                first_seen[event.destination].append(relay.extra)
            if next(acks, True):
                deliver(ack(room, event.destination, relay, now))

    for index, sender in enumerate(senders):
        now += 0.1
        deliver(say(room, sender, index, f"{index}", now))
        deliver(room.poll(now))
    while (deadline := room.next_deadline()) is not None:
        now = deadline
        deliver(room.poll(now))
    for address, received in first_seen.items():
        expected = [f"{index}" for index, sender in enumerate(senders) if sender != address]
        assert received == expected


# Limits ------------------------------------------------------------------------------------------


def test_joins_beyond_the_cap_are_refused_without_an_answer() -> None:
    room = room_with((A, "alice"), (B, "bob"), max_members=2)
    events = room.receive(datagram(1, Command.BR_ENTRY, user="carol"), C, 0.0)
    assert events == [JoinRefused(C, "carol", "the room is full (2 members)")]
    assert room.members == {A: "alice", B: "bob"}
    # A member joining again is no new member; once one leaves there is room.
    assert sends_to(room.receive(datagram(2, Command.BR_ENTRY, user="alicia"), A, 0.0), A)
    room.receive(datagram(3, Command.BR_EXIT, user="bob"), B, 0.0)
    assert Joined(C, "carol") in room.receive(datagram(4, Command.BR_ENTRY, user="carol"), C, 0.0)


@pytest.mark.parametrize("bound", [("127.0.0.1", 8081), ("0.0.0.0", 8081)])
def test_the_rooms_own_address_is_never_a_member(bound: Address) -> None:
    """A BR_ENTRY forged with the room's address made the room relay to itself."""
    room = room_with((A, "alice"), own_address=bound)
    events = room.receive(datagram(1, Command.BR_ENTRY, user="room"), ("127.0.0.1", 8081), 0.0)
    assert events == [JoinRefused(("127.0.0.1", 8081), "room", "the room's own address")]
    assert room.members == {A: "alice"}
    # Another port on the same host is somebody else.
    assert sends_to(
        room.receive(datagram(2, Command.BR_ENTRY, user="bob"), ("127.0.0.1", 8082), 0.0), ("127.0.0.1", 8082)
    )


def test_a_silent_member_is_forgotten_after_the_timeout() -> None:
    room = room_with((A, "alice"), (B, "bob"), (C, "carol"), member_timeout=60.0)
    say(room, A, 1, "hi", now=30.0)  # alice speaks; bob and carol owe acks
    [relay] = sends_to(room.poll(30.5), C)
    ack(room, C, relay, 31.0)  # carol acknowledges: heard at 31
    events = room.poll(60.0)
    assert MemberExpired(B, "bob") in events
    assert room.members == {A: "alice", C: "carol"}
    assert room.unacknowledged(B) == []
    [again] = sends_to(say(room, A, 2, "again", now=60.5), C)
    assert room.members == {A: "alice", C: "carol"}
    ack(room, C, again, 61.0)
    # Expiry happens in receive too: a message after a long silence goes to nobody who left.
    events = say(room, C, 1, "late", now=120.9)
    assert MemberExpired(A, "alice") in events
    assert room.members == {C: "carol"}
    assert sends_to(events, A) == []
    # A forgotten member joins again like anyone else.
    assert Joined(B, "bob") in room.receive(datagram(9, Command.BR_ENTRY, user="bob"), B, 121.0)


def test_retransmissions_to_a_forgotten_member_stop() -> None:
    room = room_with((A, "alice"), (B, "bob"), member_timeout=1.7, max_retransmits=10)
    room.receive(datagram(2, Command.BR_ENTRY, user="alice"), A, 1.0)
    [relay] = sends_to(say(room, A, 1, "hi", now=1.0), B)
    assert sends_to(room.poll(1.5), B) == [relay]
    events = room.poll(2.0)  # bob, silent since 0, is forgotten before his relay is due again
    assert events == [MemberExpired(B, "bob")]
    assert room.next_deadline() is None


def test_work_per_datagram_does_not_grow_with_the_members() -> None:
    """Each datagram once scanned every member: 4.7 ms with 12,000 members, 1.5 us with none."""
    room = ChatRoom(server_host="srv", first_packet_no=1, max_members=12_001)
    for index in range(12_000):
        member = (f"127.1.{index // 200}.{index % 200 + 1}", 1024 + index)
        room.receive(datagram(index, Command.BR_ENTRY, user=f"m{index}"), member, 0.0)
    room.receive(datagram(1, Command.BR_ENTRY, user="alice"), A, 0.0)
    assert len(sends(say(room, A, 1, "to everyone", now=0.0))) == 12_001  # the ack and 12,000 relays
    strangers = [(datagram(n, Command.SENDMSG, "x"), ("127.9.0.1", 2000 + n)) for n in range(250)]
    acks = [(datagram(n, Command.RECVMSG, "1"), A) for n in range(250)]
    started = time.perf_counter()
    for message, source in strangers + acks:  # as the server does for each datagram
        room.receive(message, source, 0.1)
        room.poll(0.1)
        room.next_deadline()
    elapsed = time.perf_counter() - started
    # Generous: about 1 ms on the development machine; scanning the members took over 2 s.
    assert elapsed < 0.5, f"500 datagrams took {elapsed:.2f} s with 12,000 members"


# Member -------------------------------------------------------------------------------------------


def member(**options: object) -> ChatMember:
    return ChatMember(server=SERVER, name="alice", host="pc", first_packet_no=50, **options)  # type: ignore[arg-type]


def test_member_join_is_retransmitted_until_answered() -> None:
    alice = member(retransmit_interval=0.5)
    [join] = sends(alice.join(0.0))
    assert (join.destination, join.datagram.command, join.datagram.user) == (SERVER, Command.BR_ENTRY, "alice")
    assert sends(alice.poll(0.5)) == [join]
    events = alice.receive(datagram(1, Command.ANSENTRY, "alice"), SERVER, 0.6)
    assert events == [Joined(SERVER, "alice")]
    assert alice.joined
    assert alice.next_deadline() is None


def test_a_member_that_only_reads_joins_again_before_the_room_forgets_it() -> None:
    alice = member(keepalive=300.0)
    [join] = sends(alice.join(0.0))
    alice.receive(datagram(1, Command.ANSENTRY, "alice"), SERVER, 0.1)
    # An acknowledged relay is something sent: the silence starts again from there.
    alice.receive(Datagram(1, 900, "bob", "srv", Command.SENDMSG, SENDCHECKOPT, "yo"), SERVER, 100.0)
    assert alice.next_deadline() == 400.0
    assert alice.poll(399.9) == []
    [again] = sends(alice.poll(400.0))
    assert (again.datagram.command, again.datagram.user) == (Command.BR_ENTRY, "alice")
    assert again.datagram.packet_no != join.datagram.packet_no
    assert alice.receive(datagram(2, Command.ANSENTRY, "alice"), SERVER, 400.1) == [Joined(SERVER, "alice")]
    assert alice.next_deadline() == 700.0


def test_a_member_without_keepalive_stays_silent() -> None:
    alice = member()
    alice.join(0.0)
    alice.receive(datagram(1, Command.ANSENTRY, "alice"), SERVER, 0.1)
    assert alice.next_deadline() is None
    assert alice.poll(10_000.0) == []


def test_member_join_fails_after_the_schedule() -> None:
    alice = member(retransmit_interval=0.5, max_retransmits=2)
    alice.join(0.0)
    assert len(sends(alice.poll(0.5) + alice.poll(1.0))) == 2
    assert alice.poll(1.5) == [JoinFailed(SERVER)]
    assert not alice.joined


def test_member_message_is_retransmitted_with_the_same_packet_no_until_acked() -> None:
    alice = member()
    packet_no, events = alice.say("hi: there", 0.0)
    [message] = sends(events)
    assert message.datagram == Datagram(1, packet_no, "alice", "pc", Command.SENDMSG, SENDCHECKOPT, "hi: there")
    assert sends(alice.poll(0.5)) == [message]
    events = alice.receive(datagram(9, Command.RECVMSG, str(packet_no)), SERVER, 0.7)
    assert events == [Delivered(packet_no, "hi: there")]
    assert alice.poll(10.0) == []


def test_member_warns_when_a_message_is_never_acknowledged() -> None:
    alice = member(retransmit_interval=0.5, max_retransmits=1)
    packet_no, _ = alice.say("lost", 0.0)
    alice.poll(0.5)
    assert alice.poll(1.0) == [Undelivered(packet_no, "lost")]


def test_member_acks_every_relay_and_shows_it_once() -> None:
    alice = member()
    relay = Datagram(1, 900, "bob", "srv", Command.SENDMSG, SENDCHECKOPT, "yo")
    first = alice.receive(relay, SERVER, 0.0)
    again = alice.receive(relay, SERVER, 0.5)
    assert MessageReceived("bob", "yo", 900) in first
    assert not any(isinstance(event, MessageReceived) for event in again)
    for events in (first, again):
        [ack_sent] = sends(events)
        assert (ack_sent.datagram.command, ack_sent.datagram.extra) == (Command.RECVMSG, "900")


def test_member_ignores_other_sources() -> None:
    alice = member()
    relay = Datagram(1, 900, "eve", "x", Command.SENDMSG, SENDCHECKOPT, "spoof")
    [event] = alice.receive(relay, ("127.0.0.1", 9), 0.0)
    assert isinstance(event, Ignored)


def test_member_and_room_back_to_back() -> None:
    room = ChatRoom(server_host="srv")
    members = {
        address: ChatMember(server=SERVER, name=name, host="pc")
        for address, name in [(A, "alice"), (B, "bob"), (C, "carol")]
    }
    shown: dict[Address, list[MessageReceived]] = {address: [] for address in members}

    def to_room(source: Address, events: list[MemberEvent]) -> None:
        for event in sends(events):
            to_members(room.receive(event.datagram, source, 0.0))

    def to_members(events: list[RoomEvent]) -> None:
        for event in sends(events):
            answers = members[event.destination].receive(event.datagram, SERVER, 0.0)
            shown[event.destination] += [e for e in answers if isinstance(e, MessageReceived)]
            to_room(event.destination, answers)

    for address, chat_member in members.items():
        to_room(address, chat_member.join(0.0))
        assert chat_member.joined
    _, events = members[A].say("hello", 0.0)
    to_room(A, events)
    assert members[A].unacknowledged == []
    assert [(m.nickname, m.text) for m in shown[B]] == [("alice", "hello")]
    assert [(m.nickname, m.text) for m in shown[C]] == [("alice", "hello")]
    assert shown[A] == []
    assert room.next_deadline() is None


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        ChatRoom(server_host="srv", retransmit_interval=0)
    with pytest.raises(ValueError):
        ChatRoom(server_host="srv", max_retransmits=-1)
    with pytest.raises(ValueError):
        ChatRoom(server_host="srv", relay_window=0)
    with pytest.raises(ValueError):
        ChatRoom(server_host="a:b")
    with pytest.raises(ValueError):
        ChatRoom(server_host="srv", max_members=0)
    with pytest.raises(ValueError):
        ChatRoom(server_host="srv", member_timeout=0)
    with pytest.raises(ValueError):
        ChatMember(server=SERVER, name="", host="pc")
