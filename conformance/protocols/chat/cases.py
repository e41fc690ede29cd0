"""The UDP chat room (``chat``, ``docs/chat.md``).

The suite plays several members at once (:mod:`conformance.protocols.chat.room`) with its own sockets.

"Nothing more arrives" is checked after a synchronisation point where the protocol gives one: a
server handles the datagrams of one socket in order, so once the relay of a *later* message (or
the answer to a later query) has arrived, whatever the earlier datagram caused is already on its
way. A short observation window after that point leaves room for servers that use threads.
"""

from __future__ import annotations

from functools import partial

import trio

from conformance.context import CaseContext
from conformance.kit.search import search
from conformance.model import Option, Protocol, case
from conformance.protocols._messenger.describe import VIEWS
from conformance.protocols._messenger.malformed import MALFORMED_EXAMPLES, malformed_datagrams
from conformance.protocols._messenger.peers import SETTLE_SECONDS, Peer, Received, Sockets, name_of, settle
from conformance.protocols.chat.room import (
    Room,
    chat_room,
    expect_distinct_numbers,
    expect_once,
    expect_relay,
    join,
    wait_ack,
    wait_relay_of,
)
from conformance.serving import TargetEnv
from conformance.specs import ref
from conformance.vocabulary import CaseFailed
from harness.chat.server import serve_chat
from harness.messenger.wire import Command
from harness.relay.rules import RelayLog, parse_impairments
from harness.relay.udp import serve_udp_relay

# The spec: a relay is retransmitted every 0.5 s; "within about 1 s" leaves room for a late timer.
RETRANSMIT_SECONDS = 1.2
# After an acknowledgement, a retransmission already on its way may still land this soon.
ACK_GRACE_SECONDS = 0.15
# Long enough for two more retransmissions (every 0.5 s) of a relay whose ack was ignored.
AFTER_ACK_SECONDS = 1.2


async def _embedded_chat(nursery: trio.Nursery, env: TargetEnv) -> tuple[str, int]:
    port: int = await nursery.start(partial(serve_chat, host="127.0.0.1", port=env.port))
    return ("127.0.0.1", port)


# A liveness probe resends its query this often, as a client behind a lossy link would.
PROBE_RETRY_SECONDS = 0.5


async def _chat_alive(ctx: CaseContext) -> None:
    """A member joins (BR_ENTRY answered by ANSENTRY) and leaves again (BR_EXIT)."""
    with Sockets() as sockets:
        peer = Peer(ctx, await sockets.open(), ctx.address, "liveness")
        try:
            await join(peer, seconds=ctx.target.protocol.liveness_seconds, retry=PROBE_RETRY_SECONDS)
        finally:
            await peer.leave()


CHAT = Protocol(
    name="chat",
    id_prefix="chat",
    transport="udp",
    doc="chat.md",
    describe=VIEWS,
    budget=15,
    embedded=_embedded_chat,
    options=(Option("--chat-members", help="members in the chat.many-members case", default=50, type=int),),
    liveness=_chat_alive,
    # Chat servers are written from IP Messenger code, which announces itself with a broadcast BR_ENTRY: a
    # broadcast run beside it would hear the announcement as a member of its own network.
    shares_broadcast=True,
)
PROTOCOLS = (CHAT,)

CHAT_SPEC = "docs/chat.md"


@case(CHAT, slug="join", spec=ref(CHAT_SPEC, topic="joining"))
async def chat_join(ctx: CaseContext) -> None:
    """BR_ENTRY is answered with ANSENTRY carrying the nickname in extra, from the server's address."""
    async with chat_room(ctx) as room:
        alice = await room.peer("alice", joined=False)
        answer = await join(alice)
        assert answer.datagram is not None
        if answer.source != ctx.address:
            raise CaseFailed(
                f"the ANSENTRY came from {answer.source[0]}:{answer.source[1]}, not from the server's address "
                f"{ctx.address[0]}:{ctx.address[1]}; members identify the server by its address",
                actual=answer.data,
            )
        if name_of(answer.datagram) != "alice":
            raise CaseFailed(
                "the ANSENTRY does not carry the nickname in extra",
                expected="1:<packet_no>:<user>:<host>:3:alice",
                actual=answer.data,
            )


@case(CHAT, slug="rejoin", spec=ref(CHAT_SPEC, topic="joining"))
async def chat_rejoin(ctx: CaseContext) -> None:
    """A second BR_ENTRY from a member is answered again and renames it: its relays carry the new name."""
    async with chat_room(ctx) as room:
        alice = await room.peer("alice")
        bob = await room.peer("bob")
        answer = await join(alice, name="alice2")
        assert answer.datagram is not None
        if name_of(answer.datagram) != "alice2":
            raise CaseFailed(
                "the answer to a repeated join does not carry the new nickname",
                expected="1:<packet_no>:<user>:<host>:3:alice2",
                actual=answer.data,
            )
        since = len(bob.inbox)
        await alice.say("said under my new name")
        await expect_relay(bob, "said under my new name", sender="alice2", since=since)


@case(CHAT, slug="relay", spec=ref(CHAT_SPEC, topic="sending a message"))
async def chat_relay(ctx: CaseContext) -> None:
    """A message from A reaches B and C exactly once, with A's nickname, the exact text and command 288."""
    async with chat_room(ctx) as room:
        alice, bob, carol = [await room.peer(name) for name in ("alice", "bob", "carol")]
        text = "hello from alice"
        starts = [len(bob.inbox), len(carol.inbox)]
        await alice.say(text)
        for peer, since in zip((bob, carol), starts, strict=True):
            await expect_relay(peer, text, sender="alice", since=since)
        # A later message as the synchronisation point for duplicates of the first.
        await alice.say("second message")
        for peer in (bob, carol):
            await wait_relay_of(peer, "second message")
        await settle((bob, carol), SETTLE_SECONDS)
        for peer in (bob, carol):
            expect_once(peer, text, what=f"alice's message {text!r}")


@case(CHAT, slug="ack", spec=ref(CHAT_SPEC, topic="sending a message"))
async def chat_ack(ctx: CaseContext) -> None:
    """A SENDMSG with SENDCHECKOPT is acknowledged with RECVMSG carrying its packet_no in extra."""
    async with chat_room(ctx) as room:
        alice = await room.peer("alice")
        await room.peer("bob")
        sent = await alice.say("please acknowledge")
        await wait_ack(alice, sent.packet_no)


@case(CHAT, slug="no-echo", spec=ref(CHAT_SPEC, topic="sending a message"))
async def chat_no_echo(ctx: CaseContext) -> None:
    """The sender does not get its own message back."""
    async with chat_room(ctx) as room:
        alice = await room.peer("alice")
        bob = await room.peer("bob")
        texts = ("is this echoed?", "and this one?")
        for text in texts:
            await alice.say(text)
            await wait_relay_of(bob, text)
        await settle((alice,), SETTLE_SECONDS)
        echoed = [r for text in texts for r in alice.relays_of(text)]
        if echoed:
            raise CaseFailed(
                "the server relayed alice's message back to alice; the sender must not get its own message",
                actual=echoed[0].data,
            )


def _long_text(size: int) -> str:
    """``size`` bytes of UTF-8 with Chinese characters and ':' throughout."""
    unit = "聊天室 chat: 中文：ok; "  # noqa: RUF001 (Chinese punctuation on purpose)
    text = ""
    while len((text + unit).encode()) <= size:
        text += unit
    return text + "x" * (size - len(text.encode()))


CHAT_TEXTS = ("你好，世界！ time 12:30, a:b::c", _long_text(8000))  # noqa: RUF001


@case(CHAT, slug="text", spec=(ref(CHAT_SPEC, topic="datagram format"), ref("sending a message")))
async def chat_text(ctx: CaseContext) -> None:
    """Text with Chinese characters and ':', and one of 8000 bytes, arrives intact."""
    async with chat_room(ctx) as room:
        alice = await room.peer("alice")
        bob = await room.peer("bob")
        for text in CHAT_TEXTS:
            since = len(bob.inbox)
            await alice.say(text)
            await expect_relay(bob, text, sender="alice", since=since)


@case(CHAT, slug="gb2312", spec=ref(CHAT_SPEC, topic="datagram format", note="not UTF-8: GB18030"))
async def chat_gb2312(ctx: CaseContext) -> None:
    """A member whose datagrams are GB2312 (not UTF-8) joins and is relayed, its text decoded."""
    async with chat_room(ctx) as room:
        zhang = await room.peer("张三", joined=False)
        answer_since = len(zhang.inbox)
        await zhang.send(zhang.datagram(Command.BR_ENTRY), encoding="gb2312")
        await zhang.wait_for(
            lambda r: r.is_command(Command.ANSENTRY),
            seconds=2.0,
            doing="waiting for ANSENTRY to a BR_ENTRY encoded in GB2312 (nickname 张三)",
            since=answer_since,
        )
        # The nickname's decoding shows in the relays' user field (chat.join checks the ANSENTRY).
        bob = await room.peer("bob")
        text = "你好，这是 GB2312 编码的消息：冒号 a:b"  # noqa: RUF001
        since = len(bob.inbox)
        await zhang.send(zhang.datagram(Command.SENDMSG, text, flags=256), encoding="gb2312")
        await expect_relay(bob, text, sender="张三", since=since)


@case(CHAT, slug="lost-ack", spec=ref(CHAT_SPEC, topic="duplicates"))
async def chat_lost_ack(ctx: CaseContext) -> None:
    """A resent SENDMSG (same packet_no, as after a lost ack) is acknowledged again but relayed only once."""
    async with chat_room(ctx) as room:
        alice = await room.peer("alice")
        bob = await room.peer("bob")
        text = "sent twice, relayed once"
        sent = await alice.say(text)
        first = await wait_ack(alice, sent.packet_no)
        await alice.send_bytes(alice.sent[-1])
        await wait_ack(alice, sent.packet_no, since=alice.inbox.index(first) + 1)
        await alice.say("after the resend")
        await wait_relay_of(bob, "after the resend")
        await settle((bob,), SETTLE_SECONDS)
        expect_once(bob, text, what=f"the message alice sent twice with packet_no {sent.packet_no}")


@case(CHAT, slug="retransmit", spec=ref(CHAT_SPEC, topic="relay delivery"))
async def chat_retransmit(ctx: CaseContext) -> None:
    """An unacknowledged relay is retransmitted within about 1 s; once acknowledged, it stops."""
    async with chat_room(ctx) as room:
        alice = await room.peer("alice")
        bob = await room.peer("bob", auto_ack=False)
        text = "acknowledge me late"
        await alice.say(text)
        first = await wait_relay_of(bob, text)
        assert first.datagram is not None
        number = first.datagram.packet_no

        def same_relay(received: Received) -> bool:
            return (
                received.is_command(Command.SENDMSG)
                and received.datagram is not None
                and (received.datagram.packet_no == number)
            )

        remaining = max(0.0, RETRANSMIT_SECONDS - (trio.current_time() - first.at) / ctx.options.timeout_scale)
        again = await bob.wait_for(
            same_relay,
            seconds=remaining,
            doing=f"waiting for the relay {number} to be retransmitted while bob withholds RECVMSG "
            f"(the spec: every 0.5 s; waited {ctx.seconds(RETRANSMIT_SECONDS):.1f} s from the first transmission)",
            since=bob.inbox.index(first) + 1,
        )
        ctx.note(f"retransmitted {again.at - first.at:.2f} s after the first transmission")
        await bob.send(bob.datagram(Command.RECVMSG, str(number)))
        acked_at = trio.current_time()
        await bob.observe(AFTER_ACK_SECONDS)
        late = [r for r in bob.inbox if same_relay(r) and r.at > acked_at + ctx.seconds(ACK_GRACE_SECONDS)]
        if late:
            raise CaseFailed(
                f"the relay {number} was retransmitted {len(late)} more time(s) after bob acknowledged it "
                f"(RECVMSG with {number} in extra); retransmissions must stop once acknowledged",
                actual=late[0].data,
                details=bob.summary(),
            )


ORDER_COUNT = 10


@case(CHAT, slug="order", spec=ref(CHAT_SPEC, topic="relay delivery"))
async def chat_order(ctx: CaseContext) -> None:
    """Ten messages sent back to back by A reach B in order, each under its own packet number."""
    async with chat_room(ctx) as room:
        alice = await room.peer("alice")
        bob = await room.peer("bob")
        texts = [f"message {index + 1} of {ORDER_COUNT}" for index in range(ORDER_COUNT)]
        for text in texts:
            await alice.say(text)
        await bob.wait_for(
            lambda _: len(bob.texts_in_order(texts)) == ORDER_COUNT,
            seconds=3.0,
            doing=f"waiting for bob to receive all {ORDER_COUNT} messages",
        )
        expect_distinct_numbers(bob, texts, sender="alice")
        order = bob.texts_in_order(texts)
        if order != texts:
            numbers = [int(text.split()[1]) for text in order]
            raise CaseFailed(
                f"bob received alice's {ORDER_COUNT} messages out of order: {numbers}",
                expected=list(range(1, ORDER_COUNT + 1)),
                actual=numbers,
            )


@case(CHAT, slug="exit", spec=ref(CHAT_SPEC, topic="joining and leaving"))
async def chat_exit(ctx: CaseContext) -> None:
    """After BR_EXIT, the member gets no reply and no more relays."""
    async with chat_room(ctx) as room:
        alice, bob, carol = [await room.peer(name) for name in ("alice", "bob", "carol")]
        await bob.leave()
        since = len(bob.inbox)
        await alice.say("bob has left")
        await wait_relay_of(carol, "bob has left")
        await settle((bob,), SETTLE_SECONDS)
        after = bob.inbox[since:]
        if after:
            raise CaseFailed(
                f"bob sent BR_EXIT, and still received {len(after)} datagram(s) afterwards",
                actual=after[0].data,
                details=bob.summary(),
            )


@case(CHAT, slug="non-member", spec=ref(CHAT_SPEC, topic="non-members"))
async def chat_non_member(ctx: CaseContext) -> None:
    """A SENDMSG from an address that never joined is ignored: no ack, no relay."""
    async with chat_room(ctx) as room:
        alice = await room.peer("alice")
        bob = await room.peer("bob")
        stranger = await room.peer("stranger", joined=False)
        text = "from someone who never joined"
        await stranger.say(text)
        await alice.say("a member speaks")
        await wait_relay_of(bob, "a member speaks")
        await settle((bob, stranger), SETTLE_SECONDS)
        if bob.relays_of(text):
            raise CaseFailed("a message from a non-member was relayed to bob", actual=bob.relays_of(text)[0].data)
        if stranger.inbox:
            raise CaseFailed(
                "a non-member that sent SENDMSG got an answer; non-members must be ignored",
                actual=stranger.inbox[0].data,
                details=stranger.summary(),
            )


# Command numbers for the well-formed base of the generated datagrams. BR_EXIT is left out: a
# forgiving server may read a slightly broken one as alice leaving, which is not a fault.
CHAT_MALFORMED_COMMANDS = (1, 3, 32, 33, 288)


@case(CHAT, slug="malformed", spec=ref(CHAT_SPEC, topic="decoding", note="malformed is ignored"), budget=45)
async def chat_malformed(ctx: CaseContext) -> None:
    """Malformed datagrams and random bytes (hypothesis) from a member do not break the server."""
    async with chat_room(ctx) as room:
        # bob joins first: the probes reach him even through a server that relays to one member only.
        bob = await room.peer("bob")
        alice = await room.peer("alice")
        probes = iter(range(1, 1 << 30))

        async def check(data: bytes) -> None:
            await alice.send_bytes(data)
            number = next(probes)
            prober = await room.peer(f"prober{number}", joined=False)
            try:
                # Retried like a real client's join, so that one slow answer on a loaded machine is not
                # taken for a broken server; a dead one still answers none of them.
                await join(prober, seconds=MALFORMED_JOIN_SECONDS, retry=MALFORMED_JOIN_RETRY)
            except CaseFailed as failure:
                raise CaseFailed(
                    f"after alice sent that datagram, a join was no longer answered: {failure.summary}", sent=data
                ) from None
            probe = f"still working? {number}"
            await prober.say(probe)
            try:
                await wait_relay_of(bob, probe)
            except CaseFailed as failure:
                raise CaseFailed(
                    f"after alice sent that datagram, a message was no longer relayed: {failure.summary}", sent=data
                ) from None
            await prober.leave()

        await search(ctx, malformed_datagrams(CHAT_MALFORMED_COMMANDS), check, always=MALFORMED_EXAMPLES)


MALFORMED_JOIN_SECONDS = 4.0
MALFORMED_JOIN_RETRY = 1.0


@case(CHAT, slug="many-members", spec=ref(CHAT_SPEC, topic="sending a message"), budget=30)
async def chat_many_members(ctx: CaseContext) -> None:
    """With 50 members (--chat-members), one message reaches every other member."""
    count = ctx.option("chat_members")
    async with chat_room(ctx) as room:
        peers = []
        for index in range(count):
            try:
                peers.append(await room.peer(f"m{index + 1}"))
            except CaseFailed as failure:
                raise CaseFailed(f"member {index + 1} of {count} could not join: {failure.summary}") from None
        text = f"to all {count - 1} others"
        await peers[0].say(text)
        reached: list[Peer] = []

        async def wait(peer: Peer) -> None:
            await wait_relay_of(peer, text, seconds=float("inf"))
            reached.append(peer)

        with trio.move_on_after(ctx.seconds(3.0)):
            async with trio.open_nursery() as nursery:
                for peer in peers[1:]:
                    nursery.start_soon(wait, peer)
        missing = [peer.name for peer in peers[1:] if peer not in reached]
        if missing:
            raise CaseFailed(
                f"{len(missing)} of {count - 1} members never received the message: {', '.join(missing[:12])}"
                + (" ..." if len(missing) > 12 else "")
                + " (members are named in joining order)"
            )


# Each member has its own session through the relay, and the rules count datagrams per session:
#  - in alice's (the sender's) session, up:sendmsg are her messages and down:recvmsg the acks.
#    Alice sends one message at a time and retransmits until acknowledged, so the counts are fixed:
#    #2 (message 2) is lost upstream, so she retransmits it (#3); ack #3 (of message 3) is lost,
#    so she resends message 3 with the same packet_no (#5), which must be acknowledged and not
#    relayed again; #6 (message 4) reaches the server twice and must be relayed once.
#  - in bob's and carol's sessions, down:sendmsg are relays and up:recvmsg their acks: the second
#    relay is lost (the server must retransmit it), the third is duplicated (members drop the copy
#    by packet_no), and the second ack is lost (the server retransmits; the member acks again).
#  - every session's first BR_ENTRY is duplicated: a repeated join is answered again, harmlessly.
IMPAIRMENTS = {
    "drop": ["up:sendmsg#2", "down:recvmsg#3", "down:sendmsg#2", "up:recvmsg#2"],
    "dup": ["up:sendmsg#6", "down:sendmsg#3", "up:entry#1"],
}
IMPAIRED_MESSAGES = 5
# The sender's retransmission schedule, as the reference client's.
SENDER_RETRY_SECONDS = 0.5
SENDER_TRIES = 8
# Enough for the server's four retransmissions of a lost relay, every 0.5 s.
DELIVERY_SECONDS = 5.0
# More than one retransmission interval.
LATE_COPIES_SECONDS = 0.6


@case(CHAT, slug="impairment", spec=(ref(CHAT_SPEC, topic="relay delivery"), ref("duplicates")), budget=30)
async def chat_impairment(ctx: CaseContext) -> None:
    """Through a relay that drops and duplicates chosen datagrams, every member gets every message once."""
    log = RelayLog()
    rules = parse_impairments(drop=IMPAIRMENTS["drop"], dup=IMPAIRMENTS["dup"], classify="messenger")
    texts = [f"impaired message {index + 1}" for index in range(IMPAIRED_MESSAGES)]
    try:
        async with trio.open_nursery() as nursery:
            port: int = await nursery.start(
                partial(serve_udp_relay, listen_host="127.0.0.1", upstream=ctx.address, rules=rules, log=log)
            )
            async with chat_room(ctx, server=("127.0.0.1", port)) as room:
                await _impaired_exchange(ctx, room, texts)
            nursery.cancel_scope.cancel()
    finally:
        ctx.note("relay: drop " + ", ".join(IMPAIRMENTS["drop"]) + "; dup " + ", ".join(IMPAIRMENTS["dup"]))
        ctx.note("what the relay did:\n" + (log.summary() or "(nothing impaired)"))


async def _impaired_exchange(ctx: CaseContext, room: Room, texts: list[str]) -> None:
    alice, bob, carol = [
        await room.peer(name, retry=SENDER_RETRY_SECONDS, seconds=SENDER_RETRY_SECONDS * SENDER_TRIES)
        for name in ("alice", "bob", "carol")
    ]
    ctx.note("relay sessions: " + ", ".join(f"{peer.name} from port {peer.address[1]}" for peer in (alice, bob, carol)))
    receivers = (bob, carol)
    complete = {peer.name: trio.Event() for peer in receivers}

    async def read(peer: Peer) -> None:
        # Members read (and acknowledge) all along, as real clients do.
        while True:
            await peer.receive()
            if len(peer.texts_in_order(texts)) == len(texts):
                complete[peer.name].set()

    async with trio.open_nursery() as nursery:
        for peer in receivers:
            nursery.start_soon(read, peer)
        for number, text in enumerate(texts, 1):
            sent = alice.datagram(Command.SENDMSG, text, flags=256)
            for _ in range(SENDER_TRIES):
                since = len(alice.inbox)
                await alice.send(sent)
                with trio.move_on_after(ctx.seconds(SENDER_RETRY_SECONDS)):
                    await wait_ack(alice, sent.packet_no, seconds=float("inf"), since=since)
                    break
            else:
                raise CaseFailed(
                    f"alice's message {number} was never acknowledged through the relay, "
                    f"though she sent it {SENDER_TRIES} times",
                    details=alice.summary(),
                )
        with trio.move_on_after(ctx.seconds(DELIVERY_SECONDS)):
            for event in complete.values():
                await event.wait()
        # An observation window: late duplicates and retransmissions still get to show up.
        await trio.sleep(ctx.seconds(LATE_COPIES_SECONDS))
        nursery.cancel_scope.cancel()
    for peer in receivers:
        for number, text in enumerate(texts, 1):
            expect_once(peer, text, what=f"message {number} ({text!r})", lossless=False)
