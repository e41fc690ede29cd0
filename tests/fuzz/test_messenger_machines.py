"""The chat room and the presence responder, fed arbitrary datagrams at arbitrary times.

Datagrams are mostly well-formed, from a handful of sources that include the room's own address,
with packet numbers and acknowledgements near the room's own numbers, so that joins, messages,
acks and leaves interleave; some are arbitrary bytes that happen to decode. Invariants: nothing
raises, the member table never exceeds its cap, the room is never a member of itself, and one
datagram never draws more than one datagram per member (plus an ack) out of either machine.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from harness._kit.addresses import Address
from harness.broadcast.machine import PresenceResponder
from harness.chat.machine import ChatRoom
from harness.messenger.machine import Send
from harness.messenger.wire import SENDCHECKOPT, Command, Datagram, DatagramError, decode

fuzz = settings.get_profile("fuzz")

ROOM: Address = ("127.0.0.1", 8081)
CAP = 4
#: Relays waiting for one member, small so that inputs of 40 datagrams reach it.
QUEUED = 5
# The room's own address, another port on its host, and members on other loopback hosts.
SOURCES: list[Address] = [ROOM, ("127.0.0.1", 8082), *[(f"127.0.0.{n}", 5000 + n) for n in range(2, 9)]]

_commands = st.sampled_from([*Command, 0, 99])
_numbers = st.integers(0, 40)


def _built(packet_no: int, user: str, command: int, flags: int, extra: str) -> Datagram | None:
    try:
        return Datagram(1, packet_no, user, "pc", command, flags, extra)
    except DatagramError:
        return None


def _decoded(data: bytes) -> Datagram | None:
    try:
        return decode(data)
    except DatagramError:
        return None


datagrams = st.one_of(
    st.builds(
        _built,
        _numbers,
        st.sampled_from(["alice", "bob", "x" * 300]),
        _commands,
        st.sampled_from([0, SENDCHECKOPT, 0x400]),
        st.one_of(_numbers.map(str), _numbers.map(lambda n: f" {n}\x00"), st.text(max_size=30)),
    ),
    st.binary(max_size=80).map(lambda noise: _decoded(b"1:7:eve:pc:" + noise)),
)

# (datagram, source index, seconds since the previous one): long waits reach the member timeout.
inputs = st.lists(
    st.tuples(datagrams, st.integers(0, len(SOURCES) - 1), st.one_of(st.floats(0, 1), st.floats(0, 40))),
    max_size=40,
)


@fuzz
@given(inputs, st.sampled_from([None, 1, 3]), st.sampled_from([ROOM, ("0.0.0.0", ROOM[1])]))
def test_chat_room_holds_its_limits(
    events: list[tuple[Datagram | None, int, float]], window: int | None, bound: Address
) -> None:
    room = ChatRoom(
        server_host="srv",
        first_packet_no=1,
        max_members=CAP,
        member_timeout=30.0,
        relay_window=window,
        own_address=bound,
        max_queued_relays=QUEUED,
    )
    now = 0.0
    for datagram, source, wait in events:
        now += wait
        if datagram is None:  # noise that did not decode: the server drops it before the room
            continue
        deadline = room.next_deadline()
        if deadline is not None and deadline <= now:
            assert len([e for e in room.poll(now) if isinstance(e, Send)]) <= CAP
        out = room.receive(datagram, SOURCES[source], now)
        assert len([e for e in out if isinstance(e, Send)]) <= CAP + 1
        members = room.members
        assert len(members) <= CAP
        assert ROOM not in members
        assert all(len(room.unacknowledged(member)) <= QUEUED for member in members)
    # Everything outstanding is retransmitted or given up: the schedule always ends.
    for _ in range(1000):
        deadline = room.next_deadline()
        if deadline is None:
            break
        now = max(now, deadline)
        room.poll(now)
    assert room.next_deadline() is None


@fuzz
@given(inputs)
def test_presence_responder_answers_only_the_source_and_never_itself(
    events: list[tuple[Datagram | None, int, float]],
) -> None:
    responder = PresenceResponder(name="alice", host="pc", port=ROOM[1], first_packet_no=1)
    own = [responder.announce()]
    for datagram, source, _ in events:
        if datagram is None:
            continue
        out = responder.receive(datagram, SOURCES[source])
        sends = [event for event in out if isinstance(event, Send)]
        assert len(sends) <= 1
        assert all(send.destination == SOURCES[source] for send in sends)
        for mine in own:
            mirrored = responder.receive(mine, ROOM)
            assert not any(isinstance(event, Send) for event in mirrored)
        own.extend(send.datagram for send in sends)
        own = own[-8:]
