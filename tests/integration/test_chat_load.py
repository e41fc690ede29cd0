"""12,000 forged joins at the reference chat room, over loopback: a member's round trip stays short.

Before the member cap and the heap of relay deadlines, every datagram scanned every member (4.7 ms
each with 12,000) and a legitimate round trip grew to seconds. The forged joins come from ephemeral
ports on twelve 127.0.0.x addresses, in batches; after each batch alice joins again and times the
answer, which also proves the batch was handled (the room handles one socket's datagrams in order).
"""

from __future__ import annotations

import socket
import time

import trio

from harness.chat.machine import DEFAULT_MAX_MEMBERS
from harness.chat.server import serve_chat
from harness.messenger.wire import SENDCHECKOPT, Command, Datagram, decode, encode

FORGED = 12_000
BATCH = 200
# Generous: about a millisecond here; scanning 12,000 members took seconds per batch.
ROUND_TRIP_BOUND = 1.0


async def _answer(sock: trio.socket.SocketType, command: Command, deadline: float) -> Datagram:
    with trio.fail_after(deadline):
        while True:
            datagram = decode(await sock.recv(65536))
            if datagram.command == command:
                return datagram


async def test_forged_joins_do_not_slow_a_member_down() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_chat)
        room = ("127.0.0.1", port)
        alice, bob = trio.socket.socket(type=socket.SOCK_DGRAM), trio.socket.socket(type=socket.SOCK_DGRAM)
        with alice, bob:
            for member in (alice, bob):
                await member.bind(("127.0.0.1", 0))
                await member.sendto(encode(Datagram(1, 1, "member", "pc", Command.BR_ENTRY)), room)
                await _answer(member, Command.ANSENTRY, 5)
            answered: set[tuple[str, int]] = set()
            slowest = 0.0
            with trio.fail_after(120):
                for start in range(0, FORGED, BATCH):
                    forgers = []
                    for index in range(start, start + BATCH):
                        forger = socket.socket(type=socket.SOCK_DGRAM)
                        forger.bind((f"127.0.0.{2 + index % 12}", 0))
                        forger.setblocking(False)
                        forger.sendto(encode(Datagram(1, index, f"f{index}", "pc", Command.BR_ENTRY)), room)
                        forgers.append(forger)
                    sent = time.perf_counter()
                    await alice.sendto(encode(Datagram(1, 2 + start, "alice", "pc", Command.BR_ENTRY)), room)
                    await _answer(alice, Command.ANSENTRY, 10)
                    slowest = max(slowest, time.perf_counter() - sent)
                    for forger in forgers:
                        try:
                            forger.recv(65536)
                            answered.add(forger.getsockname())
                        except BlockingIOError:
                            pass
                        forger.close()
            # The room holds at most its cap: the rest of the joins went unanswered (a port used again
            # by a later forger is the same member joining again, and is answered).
            assert 0 < len(answered) <= DEFAULT_MAX_MEMBERS - 2
            sent = time.perf_counter()
            message = Datagram(1, 99_999, "alice", "pc", Command.SENDMSG, SENDCHECKOPT, "still there?")
            await alice.sendto(encode(message), room)
            relay = await _answer(bob, Command.SENDMSG, 10)
            round_trip = time.perf_counter() - sent
        nursery.cancel_scope.cancel()
    assert relay.extra == "still there?"
    assert slowest < ROUND_TRIP_BOUND, f"a join took {slowest:.2f} s to be answered during the flood"
    assert round_trip < ROUND_TRIP_BOUND, f"a message took {round_trip:.2f} s to reach bob"
