"""The transfer socket's shortcuts: batched sends, coalesced receives, checkpoints in a flood."""

from __future__ import annotations

import socket as stdlib_socket

import pytest
import trio

from harness.tftp.endpoint import open_udp_socket

WAIT = 5


async def plain_receiver() -> trio.socket.SocketType:
    sock = trio.socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    # Room for the largest burst below: a full default buffer would drop datagrams.
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 1 << 20)
    await sock.bind(("127.0.0.1", 0))
    return sock


def window(count: int, size: int, last: int) -> list[bytes]:
    blocks = [bytes([index]) * size for index in range(count - 1)]
    return [*blocks, b"\xff" * last]


@pytest.mark.parametrize(
    "datagrams",
    [
        window(16, 1432, 1432),
        window(16, 1432, 700),  # a final short block
        window(60, 1432, 4),  # more than one system call's worth
        [b"a" * 10, b"b" * 20, b"c" * 5],  # unequal sizes: one by one
        [b"only"],
    ],
    ids=["equal", "short-last", "many", "unequal", "single"],
)
async def test_send_batch_puts_one_datagram_per_item_on_the_wire(datagrams: list[bytes]) -> None:
    receiver = await plain_receiver()
    with receiver, await open_udp_socket("127.0.0.1") as sender:
        await sender.send_batch(datagrams, receiver.getsockname())
        got = []
        with trio.fail_after(WAIT):
            while len(got) < len(datagrams):
                datagram, address = await receiver.recvfrom(70000)
                assert address == sender.getsockname()
                got.append(datagram)
    assert got == datagrams


@pytest.mark.parametrize("coalesce", [True, False])
async def test_recv_batch_gives_back_each_datagram(coalesce: bool) -> None:
    datagrams = window(40, 1432, 99)
    with await open_udp_socket("127.0.0.1") as receiver, await open_udp_socket("127.0.0.1") as sender:
        if coalesce:
            receiver.enable_coalescing()
        await sender.send_batch(datagrams, receiver.getsockname())
        got: list[bytes] = []
        with trio.fail_after(WAIT):
            while len(got) < len(datagrams):
                batch, address = await receiver.recv_batch(1433)
                assert address == sender.getsockname()
                got.extend(batch)
    assert got == datagrams


@pytest.mark.parametrize("coalesce", [True, False])
async def test_recv_batch_cuts_datagrams_to_bufsize(coalesce: bool) -> None:
    """Oversized DATA must still look oversized (one byte more than allowed), not whole."""
    with await open_udp_socket("127.0.0.1") as receiver, await open_udp_socket("127.0.0.1") as sender:
        if coalesce:
            receiver.enable_coalescing()
        await sender.sendto(b"x" * 3000, receiver.getsockname())
        with trio.fail_after(WAIT):
            batch, _ = await receiver.recv_batch(517)
    assert batch == [b"x" * 517]


async def test_a_flood_of_queued_datagrams_still_reaches_checkpoints() -> None:
    """recvfrom takes queued datagrams without yielding, but not forever: cancellation gets in."""
    with await open_udp_socket("127.0.0.1") as receiver, await open_udp_socket("127.0.0.1") as sender:
        await sender.send_batch([b"d"] * 300, receiver.getsockname())
        taken = 0
        with trio.fail_after(WAIT):
            with trio.CancelScope() as scope:
                scope.cancel()
                while taken < 300:
                    await receiver.recvfrom(100)
                    taken += 1
    assert scope.cancelled_caught
    assert taken < 100

